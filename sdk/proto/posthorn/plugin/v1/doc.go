// Package pluginv1 is the generated Go code (protoc-gen-go, protoc-gen-go-grpc)
// for posthorn.plugin.v1, the gRPC protocol between the MTA and its plugins
// over hashicorp/go-plugin: plugin.proto beside this file is the source. The
// v1 protocol is frozen; only additive changes happen within it. Plugin
// authors use package sdk, not this one; regenerate with `make generate`.
package pluginv1
