package hostside

import (
	"errors"
	"fmt"

	"github.com/posthorn/posthorn/sdk"
	"github.com/posthorn/posthorn/sdk/internal/pbconv"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
)

// The converters between the plain sdk types and protobuf are package
// sdk's (sdk/convert.go), the same code the plugin side uses; they come
// through sdk/internal/pbconv, which says why.
var (
	envelopeToPB         = pbconv.Get[func(*sdk.Envelope) *pb.Envelope](pbconv.EnvelopeToPB)
	envelopeFromPB       = pbconv.Get[func(*pb.Envelope) *sdk.Envelope](pbconv.EnvelopeFromPB)
	recipientsToPB       = pbconv.Get[func([]sdk.Recipient) []*pb.Recipient](pbconv.RecipientsToPB)
	eventToPB            = pbconv.Get[func(sdk.Event) *pb.Event](pbconv.EventToPB)
	eventFromPB          = pbconv.Get[func(*pb.Event) sdk.Event](pbconv.EventFromPB)
	hooksFromPB          = pbconv.Get[func([]pb.Hook) []sdk.Hook](pbconv.HooksFromPB)
	outboundActionFromPB = pbconv.Get[func(pb.TransformResult_Action) sdk.OutboundAction](pbconv.OutboundActionFromPB)
	confirmOutcomeFromPB = pbconv.Get[func(pb.ConfirmRequest_Outcome) sdk.ConfirmOutcome](pbconv.ConfirmOutcomeFromPB)
	verdictFromPBRaw     = pbconv.Get[func(*pb.Verdict) sdk.Verdict](pbconv.VerdictFromPB)
	inboundFilterFromPB  = pbconv.Get[func(*pb.InboundFilter) *sdk.InboundFilter](pbconv.InboundFilterFromPB)
)

func infoFromPB(r *pb.DescribeResponse) *Info {
	return &Info{
		Description: sdk.Description{
			Name:           r.GetName(),
			Version:        r.GetVersion(),
			EventTypes:     r.GetEventTypes(),
			MaxMessageSize: int64(r.GetMaxMessageSize()),
			InboundFilter:  inboundFilterFromPB(r.GetInboundFilter()),
		},
		Hooks:         hooksFromPB(r.GetHooks()),
		ProtocolMinor: r.GetProtocolMinor(),
		BodyFiles:     r.GetBodyFiles(),
	}
}

// Validate reports whether the description is usable.
func (i *Info) Validate() error {
	if err := i.Description.Validate(); err != nil {
		return err
	}
	if i.MaxMessageSize < 0 {
		return errors.New("max message size overflows")
	}
	if len(i.Hooks) == 0 {
		return errors.New("plugin reports no hooks")
	}
	if len(i.EventTypes) > 0 && !i.Has(sdk.HookEvents) {
		return errors.New("plugin subscribes to events but serves no Events hook")
	}
	return nil
}

// verdictFromPB converts the plugin's verdict and validates it.
func verdictFromPB(v *pb.Verdict) (sdk.Verdict, error) {
	out := verdictFromPBRaw(v)
	if err := out.Validate(); err != nil {
		return sdk.Verdict{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return out, nil
}
