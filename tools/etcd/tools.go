//go:build tools

// Package tools pins the etcd the Kubernetes tests' API server stores its objects in.
package tools

import _ "go.etcd.io/etcd/server/v3"
