package ctl

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"meshwork.dev/coord/api"
)

var exitCmd = group("exit", "Add, list, show and remove exits: the ways out workspaces' internet traffic is pinned to",
	&command{name: "list", summary: "List exits: kind, where they are, the public IP they are checked against", usage: "[--json]",
		examples: []string{"meshctl exit list", "meshctl exit list --json"}, run: exitList},
	&command{name: "add", summary: "Add an exit from a wg-quick file (its private key is sealed, never shown again) or a mesh node",
		usage: "NAME --wireguard FILE | --node NODE [--public-ip IP]",
		examples: []string{"meshctl exit add fra --wireguard fra.conf --public-ip 203.0.113.9",
			"meshctl exit add office --node gw1"}, run: exitAdd},
	&command{name: "show", summary: "Show one exit", usage: "NAME [--json]",
		examples: []string{"meshctl exit show fra"}, run: exitShow},
	&command{name: "remove", summary: "Remove an exit no workspace is pinned to", usage: "NAME",
		examples: []string{"meshctl exit remove fra"}, run: remover("/v1/exits/", "removed exit %s")},
)

// maxWGFile is the largest wg-quick file coord takes.
const maxWGFile = 16 << 10

func exitAdd(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var req api.CreateExit
	file := fs.String("wireguard", "", "a wg-quick `file` (\"-\": stdin): [Interface] PrivateKey, Address, DNS; [Peer] PublicKey, Endpoint, AllowedIPs = 0.0.0.0/0, ::/0")
	fs.StringVar(&req.Node, "node", "", "a mesh `node` started with meshctl node --exit")
	fs.StringVar(&req.PublicIP, "public-ip", "", "the `IP` the internet sees through this exit, which verification expects (optional)")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	req.Name = fs.Arg(0)
	if (*file == "") == (req.Node == "") {
		return usageErrorf("exit add: give exactly one of --wireguard FILE or --node NODE")
	}
	if *file != "" {
		text, err := e.readWGFile(*file)
		if err != nil {
			return err
		}
		req.WireGuard = text
	}
	var x api.Exit
	if err := e.call(ctx, "POST", "/v1/exits", req, &x); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(x)
	}
	return e.printf("added exit %s (%s); pin a workspace to it with: meshctl ws set-exit WS %s\n", x.Name, exitWhere(x), x.Name)
}

// readWGFile reads a wg-quick file at path ("-": stdin), up to what coord takes.
func (e *env) readWGFile(path string) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(e.stdin, maxWGFile+1))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("exit add: reading the wireguard file: %w", err)
	}
	if len(b) > maxWGFile {
		return "", fmt.Errorf("exit add: %s is %d bytes, over the %d KiB of a wg-quick file: is it the right file?", path, len(b), maxWGFile>>10)
	}
	return string(b), nil
}

// exitWhere says where an exit is: its node, or its WireGuard endpoint.
func exitWhere(x api.Exit) string {
	if x.Kind == api.ExitNode {
		return "node " + x.Node
	}
	return "wireguard " + x.Endpoint
}

func exitList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var list []api.Exit
	if err := e.call(ctx, "GET", "/v1/exits", nil, &list); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(list)
	}
	if len(list) == 0 {
		return e.printf("no exits yet; add one with: meshctl exit add NAME --wireguard FILE (or --node NODE)\n")
	}
	var rows [][]string
	for _, x := range list {
		rows = append(rows, []string{x.Name, x.Kind, cmp.Or(x.Node, x.Endpoint), cmp.Or(x.Address, "-"), cmp.Or(x.PublicIP, "-")})
	}
	return e.table("NAME\tKIND\tWHERE\tADDRESS\tPUBLIC IP", rows)
}

func exitShow(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	var x api.Exit
	if err := e.call(ctx, "GET", "/v1/exits/"+url.PathEscape(fs.Arg(0)), nil, &x); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(x)
	}
	rows := [][]string{{"kind:", x.Kind}}
	add := func(k, v string) {
		if v != "" {
			rows = append(rows, []string{k, v})
		}
	}
	add("node:", x.Node)
	add("endpoint:", x.Endpoint)
	add("peer key:", x.PublicKey)
	add("address:", x.Address)
	add("dns:", strings.Join(x.DNS, ", "))
	add("public ip:", x.PublicIP)
	add("created:", x.CreatedAt.Format("2006-01-02 15:04:05 MST"))
	return e.table("exit "+x.Name, rows)
}
