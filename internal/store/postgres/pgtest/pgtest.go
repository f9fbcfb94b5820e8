// Package pgtest starts throwaway PostgreSQL clusters for tests: initdb and pg_ctl on a temporary directory,
// listening on a unix socket in that directory (and, with TLS, on a loopback TCP port with a fresh
// certificate), fsync off. The server binaries come from scripts/components/postgres.sh (the distribution's
// package); KITH_POSTGRES_BIN names their directory when they are elsewhere. PostgreSQL refuses to run as
// root, so a test running as root runs the cluster as the `postgres` user (or KITH_POSTGRES_USER).
package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, for creating databases
)

// Options configures Start. The zero value is a unix-socket-only cluster.
type Options struct {
	// TLS also listens on a loopback TCP port with a certificate for 127.0.0.1 and localhost signed by a
	// fresh CA (Cluster.CAFile).
	TLS bool
}

// Cluster is one running PostgreSQL cluster. Its superuser is "test", trusted without a password on the
// unix socket (and on TCP with TLS only, when Options.TLS).
type Cluster struct {
	Dir    string // the cluster's directory: data in db/, the socket, the log in log
	Bin    string // the directory of initdb and pg_ctl
	Port   int    // the TCP port (Options.TLS) or the socket's port number
	CAFile string // the CA that signed the server certificate (Options.TLS)

	cred *syscall.Credential // who runs the server; nil: this process's user
	n    atomic.Int64
}

// BinDir returns the directory of PostgreSQL's server binaries, or an error that says how to get them.
func BinDir() (string, error) {
	if d := os.Getenv("KITH_POSTGRES_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("KITH_POSTGRES_BIN=%s holds no initdb: point it at PostgreSQL's bin directory or unset it", d)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL is not installed: run scripts/components/postgres.sh (apt-get install -y postgresql) or set KITH_POSTGRES_BIN to the directory of initdb and pg_ctl")
}

func majorOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start starts a cluster and stops it and removes its directory when t ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Destroy(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// New starts a cluster; the caller calls Destroy.
func New(opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	// A short path: the socket's path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "kithpg")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Bin: bin}
	if os.Geteuid() == 0 {
		name := os.Getenv("KITH_POSTGRES_USER")
		if name == "" {
			name = "postgres"
		}
		u, err := user.Lookup(name)
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: PostgreSQL refuses to run as root and there is no user %q to run it as: install the postgresql package (it creates the user) or set KITH_POSTGRES_USER", name)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := c.init(opts); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init(opts Options) error {
	if out, err := c.run("initdb", "-D", c.dataDir(), "-U", "test", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return fmt.Errorf("pgtest: initdb: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	c.Port = port
	conf := []string{
		"listen_addresses = ''",
		"unix_socket_directories = '" + c.Dir + "'",
		"port = " + strconv.Itoa(port),
		"fsync = off",
		"synchronous_commit = on", // as in production: a crash of the server process loses no commit (fsync off only bets on the OS)
		"full_page_writes = off",
		"max_connections = 300",
		"shared_buffers = 32MB",
	}
	if opts.TLS {
		if err := c.writeTLS(); err != nil {
			return err
		}
		conf[0] = "listen_addresses = '127.0.0.1'"
		conf = append(conf, "ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'")
		hba := "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
		if err := c.writeFile(filepath.Join(c.dataDir(), "pg_hba.conf"), hba, 0o600); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(c.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("\n" + strings.Join(conf, "\n") + "\n")
	return err
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "db") }

// writeFile writes a file the server's user owns.
func (c *Cluster) writeFile(path, content string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		return err
	}
	if c.cred != nil {
		return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
	}
	return nil
}

// writeTLS makes a CA and a server certificate for 127.0.0.1 and localhost.
func (c *Cluster) writeTLS() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	c.CAFile = filepath.Join(c.Dir, "ca.crt")
	if err := c.writeFile(c.CAFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), 0o644); err != nil {
		return err
	}
	if err := c.writeFile(filepath.Join(c.dataDir(), "server.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644); err != nil {
		return err
	}
	return c.writeFile(filepath.Join(c.dataDir(), "server.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), 0o600)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run runs one of the cluster's binaries as the cluster's user.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.Bin, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

// Start starts the cluster's server (again, after Stop) and waits until it accepts connections.
func (c *Cluster) Start() error {
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-l", filepath.Join(c.Dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "log"))
		return fmt.Errorf("pgtest: pg_ctl start: %v: %s\n%s", err, out, log)
	}
	return nil
}

// Stop stops the server at once (immediate mode: as a crash would, without a checkpoint).
func (c *Cluster) Stop() error {
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// Destroy stops the server and removes the cluster's directory.
func (c *Cluster) Destroy() error {
	var stopErr error
	if _, err := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid")); err == nil {
		stopErr = c.Stop()
	}
	return errors.Join(stopErr, os.RemoveAll(c.Dir))
}

// SocketURL returns the URL of database db over the unix socket.
func (c *Cluster) SocketURL(db string) string {
	q := url.Values{"host": {c.Dir}, "port": {strconv.Itoa(c.Port)}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User("test"), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// TLSURL returns the URL of database db over TCP with TLS, verifying the server's certificate against
// CAFile (Options.TLS).
func (c *Cluster) TLSURL(db string) string {
	q := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {c.CAFile}}
	return (&url.URL{Scheme: "postgres", User: url.User("test"), Host: net.JoinHostPort("localhost", strconv.Itoa(c.Port)), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// NewDatabase creates an empty database and returns its unix-socket URL.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	u, err := c.CreateDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// CreateDatabase creates an empty database with a fresh name and returns its unix-socket URL.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("kith%d", c.n.Add(1))
	db, err := sql.Open("pgx", c.SocketURL("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return c.SocketURL(name), nil
}
