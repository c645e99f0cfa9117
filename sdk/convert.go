package sdk

import (
	"github.com/posthorn/posthorn/sdk/internal/pbconv"
	pb "github.com/posthorn/posthorn/sdk/proto/posthorn/plugin/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The converters between the plain types and the generated protobuf types,
// both ways, for both sides of the protocol: sdk/hostside gets them through
// sdk/internal/pbconv (see there why). Enum tables are written once, plain
// to protobuf, and inverted.

func init() {
	pbconv.EnvelopeToPB = envelopeToPB
	pbconv.EnvelopeFromPB = envelopeFromPB
	pbconv.RecipientsToPB = recipientsToPB
	pbconv.EventToPB = eventToPB
	pbconv.EventFromPB = eventFromPB
	pbconv.HooksFromPB = hooksFromPB
	pbconv.VerdictFromPB = verdictFromPB
	pbconv.OutboundActionFromPB = func(a pb.TransformResult_Action) OutboundAction { return outboundActionFromPB[a] }
	pbconv.ConfirmOutcomeFromPB = func(o pb.ConfirmRequest_Outcome) ConfirmOutcome { return confirmOutcomeFromPB[o] }
	pbconv.InboundFilterFromPB = inboundFilterFromPB
}

func envelopeFromPB(e *pb.Envelope) *Envelope {
	if e == nil {
		return &Envelope{}
	}
	out := &Envelope{
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
		out.TLS = &TLSInfo{
			Version:       t.GetVersion(),
			CipherSuite:   t.GetCipherSuite(),
			ServerName:    t.GetServerName(),
			ClientSubject: t.GetClientSubject(),
		}
	}
	return out
}

func envelopeToPB(e *Envelope) *pb.Envelope {
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
		out.Tls = &pb.TLSInfo{
			Version:       t.Version,
			CipherSuite:   t.CipherSuite,
			ServerName:    t.ServerName,
			ClientSubject: t.ClientSubject,
		}
	}
	return out
}

func recipientsFromPB(rs []*pb.Recipient) []Recipient {
	if len(rs) == 0 {
		return nil
	}
	out := make([]Recipient, len(rs))
	for i, r := range rs {
		out[i] = Recipient{Address: r.GetAddress()}
	}
	return out
}

func recipientsToPB(rs []Recipient) []*pb.Recipient {
	if len(rs) == 0 {
		return nil
	}
	out := make([]*pb.Recipient, len(rs))
	for i, r := range rs {
		out[i] = &pb.Recipient{Address: r.Address}
	}
	return out
}

var hookToPB = map[Hook]pb.Hook{
	HookInbound:  pb.Hook_HOOK_INBOUND,
	HookOutbound: pb.Hook_HOOK_OUTBOUND,
	HookEvents:   pb.Hook_HOOK_EVENTS,
}

var hookFromPB = pbconv.Inverse(hookToPB)

// hooksToPB converts hooks, leaving out unknown ones.
func hooksToPB(hs []Hook) []pb.Hook {
	out := make([]pb.Hook, 0, len(hs))
	for _, h := range hs {
		if p, ok := hookToPB[h]; ok {
			out = append(out, p)
		}
	}
	return out
}

// hooksFromPB converts hooks, leaving out unknown ones (from a newer
// protocol minor).
func hooksFromPB(hs []pb.Hook) []Hook {
	var out []Hook
	for _, p := range hs {
		if h, ok := hookFromPB[p]; ok {
			out = append(out, h)
		}
	}
	return out
}

var verdictActionToPB = map[VerdictAction]pb.Verdict_Action{
	ActionAccept:     pb.Verdict_ACTION_ACCEPT,
	ActionReject:     pb.Verdict_ACTION_REJECT,
	ActionTempfail:   pb.Verdict_ACTION_TEMPFAIL,
	ActionAddHeaders: pb.Verdict_ACTION_ADD_HEADERS,
	ActionReplace:    pb.Verdict_ACTION_REPLACE,
}

var verdictActionFromPB = pbconv.Inverse(verdictActionToPB)

func verdictToPB(v Verdict) *pb.Verdict {
	out := &pb.Verdict{
		Action:       verdictActionToPB[v.Action],
		EnhancedCode: v.EnhancedCode,
		Text:         v.Text,
	}
	if v.Code > 0 {
		out.SmtpCode = uint32(v.Code)
	}
	for _, h := range v.Headers {
		out.Headers = append(out.Headers, &pb.Header{Name: h.Name, Value: h.Value})
	}
	return out
}

// verdictFromPB converts a verdict without validating it; an unknown
// action becomes the invalid zero value.
func verdictFromPB(v *pb.Verdict) Verdict {
	out := Verdict{
		Action:       verdictActionFromPB[v.GetAction()],
		Code:         int(v.GetSmtpCode()),
		EnhancedCode: v.GetEnhancedCode(),
		Text:         v.GetText(),
	}
	for _, h := range v.GetHeaders() {
		out.Headers = append(out.Headers, Header{Name: h.GetName(), Value: h.GetValue()})
	}
	return out
}

var outboundActionToPB = map[OutboundAction]pb.TransformResult_Action{
	OutboundTransformed: pb.TransformResult_ACTION_TRANSFORMED,
	OutboundDiverted:    pb.TransformResult_ACTION_DIVERTED,
	OutboundDeclined:    pb.TransformResult_ACTION_DECLINED,
}

var outboundActionFromPB = pbconv.Inverse(outboundActionToPB)

func eventFromPB(e *pb.Event) Event {
	out := Event{
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

func eventToPB(e Event) *pb.Event {
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

var confirmOutcomeToPB = map[ConfirmOutcome]pb.ConfirmRequest_Outcome{
	ConfirmDelivered: pb.ConfirmRequest_OUTCOME_DELIVERED,
	ConfirmFailed:    pb.ConfirmRequest_OUTCOME_FAILED,
}

var confirmOutcomeFromPB = pbconv.Inverse(confirmOutcomeToPB)
