package fsm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// The snapshot format: a header line, then one JSON line per record, table by table.
type header struct {
	Format  string `json:"format"` // always "meshwork-state"
	Version int    `json:"version"`
	Index   uint64 `json:"index"` // the last log index the state reflects
}

const snapshotFormat = "meshwork-state"

type record struct {
	table string
	obj   any
}

type line struct {
	T string          `json:"t"`
	O json.RawMessage `json:"o"`
}

// newRecord returns an empty object of table's type.
func newRecord(table string) (any, error) {
	switch table {
	case tUsers:
		return new(User), nil
	case tAPIKeys:
		return new(APIKey), nil
	case tAuthKeys:
		return new(AuthKey), nil
	case tNodes:
		return new(Node), nil
	case tWorkspaces:
		return new(Workspace), nil
	case tEnvs:
		return new(Environment), nil
	case tIntercepts:
		return new(Intercept), nil
	case tPolicy:
		return new(policyRow), nil
	case tAudit:
		return new(AuditEvent), nil
	case tIdem:
		return new(idemEntry), nil
	case tIndex:
		return new(tableIndex), nil
	case tAddrs:
		return new(addrLease), nil
	case tMeta:
		return new(metaRow), nil
	case tGone:
		return new(NodeGone), nil
	case tRecordings:
		return new(Recording), nil
	case tExits:
		return new(Exit), nil
	}
	return nil, errorf(CodeInvalid, "snapshot: unknown table %q (made by a newer version?)", table)
}

type snapshot struct {
	txn   *memdb.Txn
	hist  history
	index uint64
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.txn, s.hist, s.index); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// WriteSnapshot writes the state at this moment in the snapshot format (a backup).
func (s *Store) WriteSnapshot(w io.Writer) error {
	txn, hist := s.view()
	return writeSnapshot(w, txn, hist, 0)
}

func writeSnapshot(w io.Writer, txn *memdb.Txn, hist history, index uint64) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(header{Format: snapshotFormat, Version: 1, Index: index}); err != nil {
		return err
	}
	write := func(tbl string, v any) error {
		o, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return enc.Encode(line{T: tbl, O: o})
	}
	for _, tbl := range dataTables {
		var err error
		switch tbl {
		case tAudit:
			err = writeAll(tbl, hist.audit, write)
		case tIdem:
			err = writeAll(tbl, hist.idem, write)
		default:
			var it memdb.ResultIterator
			if it, err = txn.Get(tbl, "id"); err != nil {
				return err
			}
			for v := it.Next(); v != nil && err == nil; v = it.Next() {
				err = write(tbl, v)
			}
		}
		if err != nil {
			return err
		}
	}
	return bw.Flush()
}

func writeAll[T any](tbl string, rows []*T, write func(string, any) error) error {
	for _, r := range rows {
		if err := write(tbl, r); err != nil {
			return err
		}
	}
	return nil
}

// parseSnapshot reads and checks a whole snapshot.
func parseSnapshot(b []byte) ([]record, uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var h header
	if !sc.Scan() || json.Unmarshal(sc.Bytes(), &h) != nil || h.Format != snapshotFormat {
		return nil, 0, errorf(CodeInvalid, "not a Meshwork state snapshot (no header); make one with meshctl backup save")
	}
	if h.Version != 1 {
		return nil, 0, errorf(CodeInvalid, "snapshot version %d: this build reads version 1 (made by a newer Meshwork?)", h.Version)
	}
	var out []record
	for n := 2; sc.Scan(); n++ {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, 0, errorf(CodeInvalid, "snapshot line %d: %v", n, err)
		}
		obj, err := newRecord(l.T)
		if err != nil {
			return nil, 0, err
		}
		if err := json.Unmarshal(l.O, obj); err != nil {
			return nil, 0, errorf(CodeInvalid, "snapshot line %d: %v", n, err)
		}
		out = append(out, record{l.T, obj})
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("snapshot: %w", err)
	}
	return out, h.Index, nil
}

// readSnapshot builds a new store's state from a snapshot, and returns its index.
func readSnapshot(r io.Reader) (*memdb.MemDB, history, uint64, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, history{}, 0, err
	}
	records, index, err := parseSnapshot(b)
	if err != nil {
		return nil, history{}, 0, err
	}
	db, hist, err := build(records)
	return db, hist, index, err
}

// build makes a database and a history of a snapshot's records.
func build(records []record) (*memdb.MemDB, history, error) {
	db := newDB()
	txn := db.Txn(true)
	var audit []*AuditEvent
	var idem []*idemEntry
	for _, rec := range records {
		switch o := rec.obj.(type) {
		case *AuditEvent:
			audit = append(audit, o)
		case *idemEntry:
			idem = append(idem, o)
		default:
			if err := txn.Insert(rec.table, rec.obj); err != nil {
				txn.Abort()
				return nil, history{}, errorf(CodeInvalid, "snapshot: %s: %v", rec.table, err)
			}
		}
	}
	txn.Commit()
	return db, newHistory(audit, idem), nil
}
