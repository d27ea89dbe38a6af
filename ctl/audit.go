package ctl

import (
	"context"
	"fmt"
	"strconv"

	"meshwork.dev/coord/api"
)

var auditCmd = &command{name: "audit", summary: "Show the audit log: every change, who made it, from where (admins)",
	usage:    "[--since SEQ] [--limit N] [--json]",
	examples: []string{"meshctl audit", "meshctl audit --since 1200 --json"},
	run:      runAudit}

func runAudit(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	since := fs.Uint64("since", 0, "only events after this `seq`uence number")
	limit := fs.Int("limit", 1000, "at most `N` events")
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	var events []api.AuditEvent
	if err := e.call(ctx, "GET", fmt.Sprintf("/v1/audit?since=%d&limit=%d", *since, *limit), nil, &events); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(events)
	}
	var rows [][]string
	for _, ev := range events {
		rows = append(rows, []string{strconv.FormatUint(ev.Seq, 10), when(&ev.Time), ev.Actor, ev.Action, ev.Object, ev.Source, ev.Detail})
	}
	return e.table("SEQ\tTIME\tACTOR\tACTION\tOBJECT\tSOURCE\tDETAIL", rows)
}
