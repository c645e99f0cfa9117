package sdk

import "context"

type signOnlyKey struct{}

// WithSignOnly marks an Outbound call (CanHandle, Transform) as asking for
// a signature only (protocol minor 1). The host asks so for recipients
// that no method can encrypt to, under a rule with sign = true: the
// plugin answers CanHandle yes when it can sign for the sender, and its
// Transform signs without encrypting. Plugins that only encrypt answer no.
func WithSignOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, signOnlyKey{}, true)
}

// IsSignOnly reports whether the host asks for a signature only. Without
// it, CanHandle and Transform are about encryption (protocol minor 0).
func IsSignOnly(ctx context.Context) bool {
	v, _ := ctx.Value(signOnlyKey{}).(bool)
	return v
}
