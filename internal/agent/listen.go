package agent

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/kithid/kith/internal/unixsock"
)

// listenSocket listens on a unix socket with mode 0777 in a 0755 directory: the socket is the API,
// workload attestation is the access control.
func listenSocket(path string) (net.Listener, error) { return unixsock.Listen(path, 0o777) }

// listenAuthz opens the ext_authz listeners: the unix socket (mode 0777: decisions are not secret and the
// proxy may run as any user) and, unless "off", the TCP address.
func listenAuthz(socket, addr string) ([]net.Listener, error) {
	var out []net.Listener
	if socket != "" {
		l, err := listenSocket(socket)
		if err != nil {
			return nil, fmt.Errorf("authz socket %s (authz_socket): %w", socket, err)
		}
		out = append(out, l)
	}
	if addr != "" && addr != "off" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			if socket != "" {
				os.Remove(socket)
			}
			return nil, fmt.Errorf("authz listen %s (authz_listen): %w", addr, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// metricsMux serves /metrics, /healthz and, when profiling, /debug/pprof/.
func (a *Agent) metricsMux(profiling bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
