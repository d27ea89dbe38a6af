package ctl

import (
	"context"
	"flag"
	"strings"

	"meshwork.dev/coord/api"
)

var authkeyCmd = group("authkey", "Manage auth keys that let machines join the mesh",
	&command{name: "create", summary: "Create an auth key (shown once)", usage: "[--reusable] [--ephemeral] [--tag T]... [--expiry DUR]",
		examples: []string{"meshctl authkey create", "meshctl authkey create --reusable --tag tag:workmachine --expiry 2h"}, run: authkeyCreate},
	&command{name: "list", summary: "List auth keys", usage: "[--json]",
		examples: []string{"meshctl authkey list"}, run: authkeyList},
	&command{name: "revoke", summary: "Revoke an auth key", usage: "ID",
		examples: []string{"meshctl authkey revoke a1b2c3d4"}, run: remover("/v1/authkeys/", "revoked auth key %s")},
)

// tagsFlag collects repeated --tag values.
type tagsFlag []string

func (t *tagsFlag) String() string     { return strings.Join(*t, ",") }
func (t *tagsFlag) Set(v string) error { *t = append(*t, v); return nil }

var _ flag.Value = (*tagsFlag)(nil)

func authkeyCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var req api.CreateAuthKey
	fs.BoolVar(&req.Reusable, "reusable", false, "the key may register many machines (default: one)")
	fs.BoolVar(&req.Ephemeral, "ephemeral", false, "machines joined with it are removed once they go away")
	fs.Var((*tagsFlag)(&req.Tags), "tag", "a `tag` given to machines joined with the key (repeatable)")
	fs.StringVar(&req.Expiry, "expiry", "24h", "how long the key can be used, a Go `duration`")
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	var k api.NewAuthKey
	if err := e.call(ctx, "POST", "/v1/authkeys", req, &k); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(k)
	}
	return e.printf("%s\n\nAuth key %s (shown once). next, on the machine to join:\n  meshctl up --coord %s --auth-key %s\n",
		k.Key, k.AuthKey.ID, e.global.coord, k.Key)
}

func authkeyList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var keys []api.AuthKey
	if err := e.call(ctx, "GET", "/v1/authkeys", nil, &keys); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(keys)
	}
	var rows [][]string
	for _, k := range keys {
		kind := "single-use"
		if k.Reusable {
			kind = "reusable"
		}
		if k.Ephemeral {
			kind += ",ephemeral"
		}
		rows = append(rows, []string{k.ID, k.User, kind, strings.Join(k.Tags, ","), when(k.ExpiresAt), when(k.RevokedAt)})
	}
	return e.table("ID\tUSER\tKIND\tTAGS\tEXPIRES\tREVOKED", rows)
}
