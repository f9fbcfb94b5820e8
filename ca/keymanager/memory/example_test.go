package memory_test

import (
	"context"
	"fmt"

	"github.com/kithid/kith/ca/keymanager/memory"
)

func Example() {
	m := memory.New()
	key, _ := m.GenerateKey(context.Background(), "root")
	same, _ := m.GetKey(context.Background(), "root")
	fmt.Println(key == same)
	// Output: true
}
