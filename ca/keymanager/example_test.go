package keymanager_test

import (
	"context"
	"fmt"

	"github.com/kithid/kith/ca/keymanager"
	_ "github.com/kithid/kith/ca/keymanager/disk"   // registers "disk"
	_ "github.com/kithid/kith/ca/keymanager/memory" // registers "memory"
)

func ExampleNew() {
	km, err := keymanager.New("memory", keymanager.Options{})
	if err != nil {
		panic(err)
	}
	if _, err := km.GenerateKey(context.Background(), "jwt-1"); err != nil {
		panic(err)
	}
	_, err = keymanager.New("hsm", keymanager.Options{})
	fmt.Println(err)
	// Output: unknown key manager "hsm": use one of disk, memory
}
