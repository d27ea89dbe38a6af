package fsm

import "github.com/hashicorp/go-memdb"

// batch is the state of one ApplyBatch. A read through a memdb write transaction of an index
// it has changed throws away the transaction's cache of copied radix nodes (iradix's Clone),
// so the next write copies its whole path again: with a lookup before every write, each
// command paid for copying paths as if it had a transaction of its own. Ops therefore look
// rows up with get, which reads what the batch wrote from its own map and everything else
// from the state the batch started from, never through the write transaction.
type batch struct {
	f      *FSM
	txn    *memdb.Txn
	before *memdb.Txn // the state the batch started from, read-only

	// written maps a unique index value of a row put or deleted in this batch to the row,
	// nil once deleted.
	written map[written]any
	// restored: a restore replaced the whole state; read through txn from then on.
	restored bool

	tables     map[string]uint64 // the index of each table's last change in this batch
	audited    uint64            // index of the batch's last audit event
	remembered uint64            // index of the batch's last idempotency entry
}

func newBatch(f *FSM, db *memdb.MemDB) *batch {
	return &batch{f: f, txn: db.Txn(true), before: db.Txn(false), written: make(map[written]any, 64)}
}

type written struct{ table, index, value string }

// get returns the row of table whose unique string index is value, as the command sees the
// state: with every earlier write of its batch.
func get[T any](t *tx, table, index, value string) *T {
	b := t.b
	if b.restored {
		return first[T](t.Txn, table, index, value)
	}
	if v, ok := b.written[written{table, index, value}]; ok {
		row, _ := v.(*T)
		return row
	}
	return first[T](b.before, table, index, value)
}

// note records a row put (present) or deleted in table, under each of its unique indexes.
// A put that may replace a row with the same ID first drops the old row's values (a new
// node key, say, frees the old one).
func (b *batch) note(table string, row any, present, replacing bool) {
	if b.restored {
		return
	}
	if present {
		if id := idOf(table, row); replacing && id != "" {
			if old := b.row(table, id); old != nil {
				b.mark(table, old, nil)
			}
		}
		b.mark(table, row, row)
		return
	}
	b.mark(table, row, nil)
}

func idOf(table string, row any) string {
	f, ok := schema.Tables[table].Indexes["id"].Indexer.(*stringField)
	if !ok {
		return ""
	}
	id, _ := f.value(row)
	return id
}

// row is the row of table with ID id, as the batch sees it.
func (b *batch) row(table, id string) any {
	if v, ok := b.written[written{table, "id", id}]; ok {
		return v
	}
	v, _ := b.before.First(table, "id", id)
	return v
}

func (b *batch) mark(table string, row, v any) {
	for _, f := range uniqueStrings[table] {
		if val, _ := f.field.value(row); val != "" {
			b.written[written{table, f.index, val}] = v
		}
	}
}

// replaced says the state was replaced whole (a restore): what the batch remembered of its
// writes no longer holds, and lookups read through txn from then on.
func (b *batch) replaced() {
	b.restored, b.written = true, nil
}

func (b *batch) changed(table string, index uint64) {
	if b.tables == nil {
		b.tables = map[string]uint64{}
	}
	b.tables[table] = index
}
