package ctl

import (
	"context"
	"net/url"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/keys"
)

var apikeyCmd = group("apikey", "Manage admin API keys",
	&command{name: "create", summary: "Create an API key (shown once)", usage: "[--user NAME] [--name NOTE] [--expiry DUR]",
		examples: []string{"meshctl apikey create --name laptop", "meshctl apikey create --user alice --expiry 720h"}, run: apikeyCreate},
	&command{name: "list", summary: "List API keys", usage: "[--json]",
		examples: []string{"meshctl apikey list"}, run: apikeyList},
	&command{name: "revoke", summary: "Revoke an API key", usage: "ID",
		examples: []string{"meshctl apikey revoke k1a2b3c4"}, run: remover("/v1/apikeys/", "revoked API key %s")},
	&command{name: "rotate", summary: "Replace an API key (default: yours) with a new one, revoking it", usage: "[ID]",
		examples: []string{"meshctl apikey rotate", "meshctl apikey rotate k1a2b3c4"}, run: apikeyRotate},
)

func apikeyCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var req api.CreateAPIKey
	fs.StringVar(&req.User, "user", "", "the `user` the key acts as (default: you; admins only for others)")
	fs.StringVar(&req.Name, "name", "", "a `note` saying what the key is for")
	fs.StringVar(&req.Expiry, "expiry", "", "lifetime as a Go `duration` (720h); default: never expires")
	if err := e.args(fs, args, 0); err != nil {
		return err
	}
	var k api.NewAPIKey
	if err := e.call(ctx, "POST", "/v1/apikeys", req, &k); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(k)
	}
	return e.printf("%s\n\nAPI key %s for %s. This is the only time it is shown: keep it.\nnext: export MESHCTL_TOKEN=%s\n",
		k.Key, k.APIKey.ID, k.APIKey.User, k.Key)
}

func apikeyList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var keys []api.APIKey
	if err := e.call(ctx, "GET", "/v1/apikeys", nil, &keys); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(keys)
	}
	var rows [][]string
	for _, k := range keys {
		rows = append(rows, []string{k.ID, k.User, k.Name, when(&k.CreatedAt), when(k.ExpiresAt), when(k.RevokedAt)})
	}
	return e.table("ID\tUSER\tNAME\tCREATED\tEXPIRES\tREVOKED", rows)
}

// apikeyRotate replaces a key with a new one for the same user and name, and revokes it:
// the caller's own key unless an ID is given (admins may rotate anyone's).
func apikeyRotate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usageErrorf("apikey rotate: want at most 1 argument (%s), got %d; run 'meshctl apikey rotate --help'", e.cmd.usage, fs.NArg())
	}
	id, own := fs.Arg(0), fs.NArg() == 0
	if own {
		k, err := keys.Parse(e.global.token, keys.APIKey)
		if err != nil {
			return usageErrorf("apikey rotate: no ID given and --token (MESHCTL_TOKEN) is no API key (mk_...) to rotate")
		}
		id = k.ID
	}
	var k api.NewAPIKey
	if err := e.call(ctx, "POST", "/v1/apikeys/"+url.PathEscape(id)+"/rotate", nil, &k); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(k)
	}
	if err := e.printf("%s\n\nAPI key %s for %s replaces %s, now revoked. This is the only time it is shown: keep it.\n",
		k.Key, k.APIKey.ID, k.APIKey.User, id); err != nil {
		return err
	}
	if own {
		return e.printf("next: export MESHCTL_TOKEN=%s (and replace the old key wherever it is kept, such as STATE/admin.key)\n", k.Key)
	}
	return nil
}
