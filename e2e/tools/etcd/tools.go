//go:build tools

// Package tools only records the commands this wrapper module builds; it is never compiled.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
