package config

// The key managers a server may name in ca.key_manager. Each registers itself with package
// ca/keymanager, and validation accepts exactly the registered names, so a new key manager is one more
// import here.
import (
	_ "github.com/kithid/kith/ca/keymanager/disk"
	_ "github.com/kithid/kith/ca/keymanager/memory"
)
