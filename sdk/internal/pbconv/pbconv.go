// Package pbconv hands the converters between the SDK's plain Go types and
// the generated protobuf types from package sdk, where they are written
// once (sdk/convert.go), to package sdk/hostside, so that the plugin side
// and the host side of the protocol convert with the same code.
//
// The converters cannot be written here: they work on sdk's types, and
// package sdk needs them itself, so this package would have to import sdk
// and be imported by it. Moving the types here instead would leave
// sdk.Envelope and the rest as aliases whose fields and methods go doc no
// longer shows plugin authors. So package sdk stores its converters in
// these variables when it is initialised, which is before any package that
// imports it, and hostside takes each one out with Get when it is
// initialised itself. The comment on each variable names its dynamic type;
// a converter that is missing or of another type makes Get panic while
// hostside is initialised, so every test of hostside catches it. (grpc-go's
// internal package passes functions between its packages the same way.)
package pbconv

import "fmt"

// The converters package sdk stores; on the right the type of each.
var (
	EnvelopeToPB         any // func(*sdk.Envelope) *pb.Envelope
	EnvelopeFromPB       any // func(*pb.Envelope) *sdk.Envelope
	RecipientsToPB       any // func([]sdk.Recipient) []*pb.Recipient
	EventToPB            any // func(sdk.Event) *pb.Event
	EventFromPB          any // func(*pb.Event) sdk.Event
	HooksFromPB          any // func([]pb.Hook) []sdk.Hook
	VerdictFromPB        any // func(*pb.Verdict) sdk.Verdict, not validated
	OutboundActionFromPB any // func(pb.TransformResult_Action) sdk.OutboundAction
	ConfirmOutcomeFromPB any // func(pb.ConfirmRequest_Outcome) sdk.ConfirmOutcome
	InboundFilterFromPB  any // func(*pb.InboundFilter) *sdk.InboundFilter
)

// Get returns the converter v as a function of type F. It panics when v
// is not set or has another type: package sdk and its user disagree, a
// programming error.
func Get[F any](v any) F {
	f, ok := v.(F)
	if !ok {
		panic(fmt.Sprintf("pbconv: converter is %T, want %T", v, f))
	}
	return f
}

// Inverse returns the map from the values of m back to its keys; m must
// be one to one. Enum tables are written in one direction and inverted.
func Inverse[K, V comparable](m map[K]V) map[V]K {
	out := make(map[V]K, len(m))
	for k, v := range m {
		if _, dup := out[v]; dup {
			panic(fmt.Sprintf("pbconv: %v appears twice in an enum table", v))
		}
		out[v] = k
	}
	return out
}
