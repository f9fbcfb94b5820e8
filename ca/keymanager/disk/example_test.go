package disk_test

import (
	"context"
	"fmt"
	"os"

	"github.com/kithid/kith/ca/keymanager/disk"
)

func Example() {
	dir, _ := os.MkdirTemp("", "keys")
	defer os.RemoveAll(dir)
	m, err := disk.New(dir)
	if err != nil {
		panic(err)
	}
	if _, err := m.GenerateKey(context.Background(), "jwt-1"); err != nil {
		panic(err)
	}
	info, _ := os.Stat(dir + "/jwt-1.pem")
	fmt.Println(info.Mode())
	// Output: -rw-------
}
