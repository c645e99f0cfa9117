package hostside

import (
	"errors"
	"fmt"

	"github.com/posthorn/posthorn/sdk"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Converters between the plain sdk types and protobuf, host side. Package
// sdk has the mirror image for the plugin side; the end-to-end tests keep
// the two in step.

func envelopeToPB(e *sdk.Envelope) *pb.Envelope {
	if e == nil {
		return &pb.Envelope{}
	}
	out := &pb.Envelope{
		Id:         e.ID,
		MailFrom:   e.MailFrom,
		Recipients: recipientsToPB(e.Recipients),
		ClientAddr: e.ClientAddr,
		Helo:       e.Helo,
		AuthUser:   e.AuthUser,
		Smtputf8:   e.SMTPUTF8,
	}
	if e.Size > 0 {
		out.Size = uint64(e.Size)
	}
	if t := e.TLS; t != nil {
		out.Tls = &pb.TLSInfo{Version: t.Version, CipherSuite: t.CipherSuite, ServerName: t.ServerName, ClientSubject: t.ClientSubject}
	}
	return out
}

func envelopeFromPB(e *pb.Envelope) *sdk.Envelope {
	out := &sdk.Envelope{
		ID:         e.GetId(),
		MailFrom:   e.GetMailFrom(),
		Recipients: recipientsFromPB(e.GetRecipients()),
		ClientAddr: e.GetClientAddr(),
		Helo:       e.GetHelo(),
		AuthUser:   e.GetAuthUser(),
		Size:       int64(e.GetSize()),
		SMTPUTF8:   e.GetSmtputf8(),
	}
	if t := e.GetTls(); t != nil {
		out.TLS = &sdk.TLSInfo{Version: t.GetVersion(), CipherSuite: t.GetCipherSuite(), ServerName: t.GetServerName(), ClientSubject: t.GetClientSubject()}
	}
	return out
}

func recipientsToPB(rs []sdk.Recipient) []*pb.Recipient {
	if len(rs) == 0 {
		return nil
	}
	out := make([]*pb.Recipient, len(rs))
	for i, r := range rs {
		out[i] = &pb.Recipient{Address: r.Address}
	}
	return out
}

func recipientsFromPB(rs []*pb.Recipient) []sdk.Recipient {
	if len(rs) == 0 {
		return nil
	}
	out := make([]sdk.Recipient, len(rs))
	for i, r := range rs {
		out[i] = sdk.Recipient{Address: r.GetAddress()}
	}
	return out
}

func infoFromPB(r *pb.DescribeResponse) *Info {
	info := &Info{
		Description: sdk.Description{
			Name:           r.GetName(),
			Version:        r.GetVersion(),
			EventTypes:     r.GetEventTypes(),
			MaxMessageSize: int64(r.GetMaxMessageSize()),
		},
		ProtocolMinor: r.GetProtocolMinor(),
	}
	for _, h := range r.GetHooks() {
		switch h {
		case pb.Hook_HOOK_INBOUND:
			info.Hooks = append(info.Hooks, sdk.HookInbound)
		case pb.Hook_HOOK_OUTBOUND:
			info.Hooks = append(info.Hooks, sdk.HookOutbound)
		case pb.Hook_HOOK_EVENTS:
			info.Hooks = append(info.Hooks, sdk.HookEvents)
		}
	}
	return info
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

var verdictActionFromPB = map[pb.Verdict_Action]sdk.VerdictAction{
	pb.Verdict_ACTION_ACCEPT:      sdk.ActionAccept,
	pb.Verdict_ACTION_REJECT:      sdk.ActionReject,
	pb.Verdict_ACTION_TEMPFAIL:    sdk.ActionTempfail,
	pb.Verdict_ACTION_ADD_HEADERS: sdk.ActionAddHeaders,
	pb.Verdict_ACTION_REPLACE:     sdk.ActionReplace,
}

func verdictFromPB(v *pb.Verdict) (sdk.Verdict, error) {
	out := sdk.Verdict{
		Action:       verdictActionFromPB[v.GetAction()],
		Code:         int(v.GetSmtpCode()),
		EnhancedCode: v.GetEnhancedCode(),
		Text:         v.GetText(),
	}
	for _, h := range v.GetHeaders() {
		out.Headers = append(out.Headers, sdk.Header{Name: h.GetName(), Value: h.GetValue()})
	}
	if err := out.Validate(); err != nil {
		return sdk.Verdict{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return out, nil
}

var outboundActionFromPB = map[pb.TransformResult_Action]sdk.OutboundAction{
	pb.TransformResult_ACTION_TRANSFORMED: sdk.OutboundTransformed,
	pb.TransformResult_ACTION_DIVERTED:    sdk.OutboundDiverted,
	pb.TransformResult_ACTION_DECLINED:    sdk.OutboundDeclined,
}

func eventToPB(e sdk.Event) *pb.Event {
	out := &pb.Event{
		Id:           e.ID,
		Type:         e.Type,
		QueueId:      e.QueueID,
		Sender:       e.Sender,
		Recipient:    e.Recipient,
		Attributes:   e.Attributes,
		SourcePlugin: e.SourcePlugin,
		Language:     e.Language,
	}
	if !e.Time.IsZero() {
		out.Time = timestamppb.New(e.Time)
	}
	return out
}

func eventFromPB(e *pb.Event) sdk.Event {
	out := sdk.Event{
		ID:           e.GetId(),
		Type:         e.GetType(),
		QueueID:      e.GetQueueId(),
		Sender:       e.GetSender(),
		Recipient:    e.GetRecipient(),
		Attributes:   e.GetAttributes(),
		SourcePlugin: e.GetSourcePlugin(),
		Language:     e.GetLanguage(),
	}
	if t := e.GetTime(); t != nil {
		out.Time = t.AsTime()
	}
	return out
}

var confirmOutcomeFromPB = map[pb.ConfirmRequest_Outcome]sdk.ConfirmOutcome{
	pb.ConfirmRequest_OUTCOME_DELIVERED: sdk.ConfirmDelivered,
	pb.ConfirmRequest_OUTCOME_FAILED:    sdk.ConfirmFailed,
}
