// Package queue is Posthorn's durable spool: it stores accepted messages
// until every recipient is delivered or has failed, hands them to
// deliverers (leases), keeps per-recipient state and the retry schedule,
// and recovers after a crash. A 250 may be sent once Enqueue has returned.
//
// # On-disk layout
//
//	Dir/
//	  lock          flock'ed while a process has the spool open
//	  slotfree      the slot free table: which slot messages are finished
//	  msg/slot-NNN  slot files: a fixed pool of message files, each free
//	                or holding one message (see Slot files)
//	  msg/ID        one file per queued message (ID: 16 chars [0-9A-Za-z])
//	                that is not in a slot
//	  msg/.tmp-*    files being written, and spare files (finished
//	                messages' files kept for reuse); never acknowledged
//	  quarantine/   entries recovery could not read, moved here untouched
//
// # Message file
//
// Envelope and body live in one file, so a message is either entirely
// there or not at all. An ID-named file appears under its final name only
// by rename, after it is complete and fsynced; a slot file is overwritten
// in place, and its header decides (see Slot files):
//
//	offset 0    header, 32 bytes:
//	              "PHQMSG01"        magic and format version
//	              u64 LE            body length N
//	              u32 LE            CRC-32C (Castagnoli) of the body
//	              u8                flags: bit 0 = the body is in SMTP DATA
//	                                form already (see BodyReader.DataReady);
//	                                other bits reserved, zero
//	              7 bytes           reserved, zero
//	              u32 LE            CRC-32C of the 28 bytes before it
//	offset 32   body: exactly the N bytes given to Enqueue
//	offset 32+N journal: records, back to back, each
//	              u32 LE            payload length L
//	              u32 LE            CRC-32C of the length, type and payload
//	              u8                type
//	              L bytes           payload
//
// Files written before the flags byte existed have it zero, which claims
// nothing; older programs ignore it (the header checksum covers it).
//
// A slot file holding a message has the same layout with two changes:
// the magic is "PHQSLOT1", and the last four reserved bytes (24..27) hold
// the checksum field of the first record (the slot's seed). The first
// record's checksum is computed as above; every later record's CRC-32C
// starts from the seed instead of zero. A slot is free if its header is
// "PHQFREE1", zeros, and the CRC-32C of its first 28 bytes (what follows
// is left over from earlier messages and means nothing), or if the free
// table names the seed of the message in it.
//
// The free table Dir/slotfree holds one 16-byte entry per slot N, at
// offset 16·N: "PHQF", u32 LE N, u32 LE seed, u32 LE CRC-32C of the 12
// bytes before it. An entry says: the message with that seed in slot N
// is finished. Entries are overwritten in place; none crosses a 512-byte
// sector, and a durable entry stays durable (a later write to its sector
// carries it along). An entry that does not check out says nothing.
//
// Record types: 'E' holds the whole Envelope as JSON (the fields of
// envelope.go; Recovered is not stored); the last intact 'E' record is the
// message's state. 'X' (empty payload) is a tombstone: the operator
// deleted the message. The first record is always an 'E' written by
// Enqueue; every later state change (Report, Hold, Unhold, Requeue,
// SetAttr) appends a complete new 'E' record. Whole snapshots keep
// recovery trivial: there is no replay, and a failed write is repaired by
// the next successful one. When the journal grows past 256 KiB and eight
// times the newest record, the file is rewritten with only the newest
// record (temp file, fsync, rename, directory fsync; the body is copied by
// the kernel via copy_file_range where possible).
//
// Records are written at the end of the last intact record and fsynced
// before the call returns; a failed write is truncated away. Since only
// one append per message is in flight at a time, only the last record can
// be torn by a crash: whatever follows the last intact record is ignored,
// and truncated at recovery.
//
// # Slot files
//
// Enqueue writes a message into a free slot when there is one: from
// offset 0 it writes header, body and first record in one write (a body
// over 128 KiB: the buffer-sized pieces first with a zeroed header, the
// header last), cuts the file to that length, and fsyncs it. That fsync
// is the acknowledgement: no file is created, nothing renamed, the
// directory not touched. A slot's commit point is its header (32 bytes
// in the first 512-byte sector): recovery loads a slot only if
//   - its header is an intact slot header,
//   - the body's CRC-32C matches the header (checked at recovery for slots
//     only: an overwrite in place can leave any mix of old and new
//     sectors behind a new header),
//   - the record right after the body is intact and is the one whose
//     checksum the header carries, and
//   - (for its later records) they check out against the seed.
//
// Any mix of old and new sectors a crash leaves of an interrupted
// overwrite thus is either the new message byte for byte, or fails a
// check and is a free slot: it was never acknowledged. A record left over
// from the slot's earlier message cannot pass for a later record of the
// new one (its CRC started from another seed), and cannot pass for its
// first one (the header names that). The earlier message itself cannot
// come back: the free table named its seed, durably, before its slot was
// reused (and a new message never gets that seed: in the one-in-2^32 case
// that its first record's checksum equals it, it is written as an
// ID-named file; a compaction that would produce it appends instead).
//
// At most 128 slot files exist; a new one is created (O_EXCL, written,
// fsynced, directory fsynced before Enqueue returns) only while fewer do.
// When every slot holds a message, Enqueue writes an ID-named file as
// described below. Enqueue reads the first 128 KiB + 1 byte of a body
// before it picks a file: a longer body never goes into a slot (an
// ID-named file, a spare's blocks reused), so recovery's full read of the
// slots stays bounded, and large messages do not use up slot names (a
// slot renamed to msg/ID would have to be created anew, which at 1 MiB
// cost a third of the throughput). A slot file that cannot be opened is
// not used again until restart.
//
// A message in a slot is finished (Report leaving no recipient pending,
// or Delete after its tombstone) by writing its slot's entry in the free
// table and fsyncing the table (group commit, like the directory fsyncs
// below: one fsync serves every finish that arrived while the previous
// one ran; if the table cannot be written, the slot gets the free header,
// fsynced). Only then, and only once no BodyReader has the file open, is
// the slot handed to Enqueue again. Journal appends, Hold,
// Requeue, SetAttr and compaction (rewritten with a slot header, renamed
// over the slot's name, directory fsynced) work on slots as on ID-named
// files.
//
// A message in a slot that is reported with a recipient still pending
// (deferred: it waits for a later attempt, perhaps for days) leaves its
// slot, so that waiting mail does not take the pool new mail is
// acknowledged fast in: its body and the new state are written to
// msg/.tmp-ID-unslot, fsynced, renamed to msg/ID and the directory
// fsynced, and from then on it is an ID-named file; then its slot is
// finished as above. A crash in between leaves the message in both:
// recovery loads the ID-named file (the newer state) and frees the slot
// holding the same ID and body, without quarantining it. If the move
// fails, the record is appended in the slot instead.
//
// An older posthorn (before slots) treats slot files as entries that are
// not queue files and moves them to quarantine: nothing is lost (the
// files are kept whole), but messages in slots are not delivered until an
// operator acts, the log is noisy, and finished messages (whose slots
// only the free table marks) land in quarantine too; drain the queue
// before going back. It ignores Dir/slotfree.
//
// # fsync points
//
//   - Enqueue into a slot: the slot file, once (plus the directory if the
//     slot file was created by this call).
//   - Enqueue otherwise: the temp file (header, body, first record) is
//     fsynced by the calling goroutine; then it is renamed to msg/ID and the msg directory
//     is fsynced; Enqueue returns after that directory fsync. The
//     directory fsync is shared (group commit): a committer goroutine
//     serves every request that arrived while its previous fsync ran with
//     a single fsync of msg/, which always starts after the request was
//     made. Concurrent SMTP sessions therefore pay one file fsync each and
//     share directory fsyncs.
//   - Report, Hold, Unhold, Requeue, SetAttr, Delete: one record appended
//     and the file fsynced (a compaction adds a rewrite and a directory
//     fsync through the committer).
//   - Report that leaves no recipient pending, Delete, for a message in a
//     slot: its free table entry is written, and the table fsynced (group
//     commit; see Slot files).
//   - Report that leaves a recipient pending, for a message in a slot: the
//     message's new file (body and record), the directory (group commit),
//     then the free table entry of the slot it left (group commit).
//   - Report that leaves no recipient pending: the file is unlinked, or
//     renamed to a spare name (.tmp-spare-N), and the directory fsynced
//     (group commit), so a finished message never returns; no final
//     record is written. Once that fsync returned, Enqueue may overwrite
//     the spare (from offset 0, cut to the new length, fsynced, renamed to
//     the new ID exactly like a new file): creating and unlinking a file
//     per message cost more CPU on ext4 than writing it (issue 19). A
//     file some BodyReader has open is always unlinked, never reused; at
//     most 64 spares are kept, Close removes them, recovery removes any
//     left by a crash.
//   - Delete: the tombstone is fsynced, then the file is unlinked (no
//     directory fsync needed: recovery honours the tombstone). If the
//     message is leased, the unlink waits until Report or Release.
//   - Open: the spool directories, and the msg directory again after
//     recovery removed or quarantined entries.
//
// Leases, Flush, and the due-time index are memory only: after a crash
// every message is simply loaded again and due at its stored NextAttempt.
//
// # Retry schedule
//
// Each reported attempt increments the recipient's Attempts. A deferred
// recipient (Result State Pending) is next due after
//
//	Backoff(n) = min(MinBackoff·2^(n−1), MaxBackoff) × (1 ± 15%)
//
// with defaults MinBackoff 5m and MaxBackoff 4000s, so 5m, 10m, 20m, 40m,
// 66m40s, 66m40s, … The spread comes from Options.Jitter (j in [0,1) gives
// the factor 0.85+0.3·j), so many messages deferred together do not retry
// together. The next attempt is never scheduled past Received+MaxLifetime
// (default 5 days) while that is still ahead, so the last attempt happens
// when the lifetime ends; Expired tells the deliverer to give up then (the
// queue itself never fails a recipient).
//
// # Leasing
//
// Lease hands out one message at a time that is not held, not leased, and
// has a pending recipient with NextAttempt ≤ now, earliest due first. It
// sleeps on a timer until the next due time (at most 30 s, in case the
// clock steps) and wakes at once when Enqueue, Flush, Unhold, Requeue,
// Report or Release make something due. A lease ends with Report or
// Release; leases are not persisted.
//
// # Recovery
//
// Open takes the lock, then reads every entry of msg/:
//   - slot files are read completely and checked as described under Slot
//     files. One holding a message with a pending recipient is loaded
//     under the ID of its records (the file name is not an ID); if that
//     ID is already taken by an ID-named file with the same body (the
//     message left the slot, see Slot files), the slot is freed; if it is
//     taken otherwise, a copy of the slot goes to quarantine (logged at
//     error level) and the slot is freed. The free
//     table is read (and fsynced: an entry written just before a crash
//     may not have been durable yet) before the slots; a slot whose
//     message the table names is free. A slot whose header is free is
//     fsynced for the same reason; one whose message is finished by its
//     records, or whose content fails a check (a write a crash
//     interrupted: never acknowledged), is given the free header and
//     fsynced, logged at info or warning level, not quarantined. A slot whose header and first record belong together
//     but whose later records are damaged (not what a crash does) is
//     copied to quarantine first. A torn last record is dropped as below;
//   - .tmp-* files are removed: they were never acknowledged;
//   - a file whose journal holds a tombstone, or in which no recipient is
//     pending any more, is removed (its end was durable, its unlink not);
//   - a torn last record is dropped (file truncated and fsynced);
//   - everything else is loaded; copies of these envelopes carry
//     Recovered = true, since a delivery may have been under way at the
//     crash (a Maildir deliverer can look for its earlier copy).
//
// Bodies of ID-named files are not checksummed at Open (that would read
// the whole spool); Verify checks one on demand. Slots are (at most 128
// bodies of up to 128 KiB). Eight goroutines read and decode the files
// (one open, one read of up to 16 KiB and one close for a message of up
// to ~15 KiB); the results are applied in directory order. Every change
// recovery makes (remove, truncate, move to quarantine) is idempotent, so
// a crash during recovery leaves a spool the next Open treats the same.
//
// # Quarantine
//
// An entry recovery cannot use — a name that is not a queue ID or slot
// name, not a regular file, a bad header or header checksum, a body shorter than the
// header says ("missing body"), no intact envelope record, an intact
// record whose JSON or contents are invalid (ID not matching the file
// name, size not matching the body, no or null recipients, unknown state),
// or an unknown record type — is moved to quarantine/ under its own name
// (with a suffix if taken) and logged at error level. It is never deleted
// and never makes Open fail; the other messages load normally.
package queue
