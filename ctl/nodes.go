package ctl

import (
	"context"
	"net/url"
	"strconv"
	"strings"

	"meshwork.dev/coord/api"
)

// nodeCmd is `meshctl node list|delete`, and with flags and no verb (`meshctl node --coord …`)
// the workmachine agent.
var nodeCmd = withAgent(group("node", "Run a workmachine (meshctl node --coord URL ...); list and remove machines",
	&command{name: "list", summary: "List machines on the mesh", usage: "[--json]",
		examples: []string{"meshctl node list"}, run: nodeList},
	&command{name: "delete", summary: "Remove a machine from the mesh (it is cut off at once)", usage: "NAME",
		examples: []string{"meshctl node delete old-laptop"}, run: remover("/v1/nodes/", "removed %s from the mesh; its peers drop it with their next map")},
	&command{name: "tag", summary: "Set a machine's tags (admins, or its owner with tags the policy's tagOwners gives)", usage: "NAME [TAG...]",
		examples: []string{"meshctl node tag wm1 tag:workmachine", "meshctl node tag old-ci   # no tags: the machine is its owner's again"}, run: nodeTag},
	&command{name: "shield", summary: "List or lift a workmachine's SSH shield blocks (admins, over the mesh)", usage: "list MACHINE | unblock MACHINE ADDR",
		examples: []string{"meshctl node shield list wm1", "meshctl node shield unblock wm1 100.64.0.9"}, run: nodeShield},
))

// nodeTag replaces a machine's tags. A machine tagged tag:workmachine hosts workspaces.
func nodeTag(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usageErrorf("node tag: want NAME [TAG...]; run 'meshctl node tag --help'")
	}
	name, req := fs.Arg(0), api.SetTags{Tags: fs.Args()[1:]}
	var n api.Node
	if err := e.call(ctx, "PUT", "/v1/nodes/"+url.PathEscape(name)+"/tags", req, &n); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(n)
	}
	if len(n.Tags) == 0 {
		return e.printf("%s has no tags: it belongs to %s\n", n.Name, n.User)
	}
	return e.printf("%s is tagged %s\n", n.Name, strings.Join(n.Tags, ", "))
}

// nodeShield asks a workmachine, over the mesh, which addresses its SSH shield blocks, or to
// lift one block.
func nodeShield(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	state, socket := daemonPaths(fs)
	if err := e.parse(fs, args); err != nil {
		return err
	}
	a := fs.Args()
	switch {
	case len(a) == 2 && a[0] == "list":
		var blocks []api.ShieldBlock
		if err := machineCall(ctx, socketPath(*state, *socket), a[1], "GET", "/v1/shield", &blocks); err != nil {
			return err
		}
		if e.global.json {
			return e.printJSON(blocks)
		}
		if len(blocks) == 0 {
			return e.printf("%s blocks no address\n", a[1])
		}
		var rows [][]string
		for _, b := range blocks {
			rows = append(rows, []string{b.Addr, when(&b.Until), strconv.Itoa(b.Failures)})
		}
		return e.table("ADDRESS\tUNTIL\tFAILURES", rows)
	case len(a) == 3 && a[0] == "unblock":
		if err := machineCall(ctx, socketPath(*state, *socket), a[1], "POST", "/v1/shield/unblock?addr="+url.QueryEscape(a[2]), nil); err != nil {
			return err
		}
		return e.printf("%s no longer blocks %s\n", a[1], a[2])
	}
	return usageErrorf("node shield: want list MACHINE or unblock MACHINE ADDR; run 'meshctl node shield --help'")
}

// withAgent lets the node group also run the workmachine agent.
func withAgent(g *command) *command {
	g.usage = workmachineUsage + "\n       meshctl node " + g.usage
	g.examples = append([]string{"meshctl node --coord http://10.0.0.1:8080 --auth-key ak_... --state /var/lib/meshwork/node --hostname wm1"}, g.examples...)
	g.run = nodeOrAgent(g.run)
	return g
}

func nodeList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var nodes []api.Node
	if err := e.call(ctx, "GET", "/v1/nodes", nil, &nodes); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(nodes)
	}
	if len(nodes) == 0 {
		return e.printf("no machines yet; join one with: meshctl authkey create, then meshctl up --coord URL --auth-key KEY\n")
	}
	var rows [][]string
	for _, n := range nodes {
		seen := when(&n.LastSeen)
		if n.Online {
			seen = "online"
		}
		rows = append(rows, []string{n.Name, n.IPv4, n.IPv6, n.User, strings.Join(n.Tags, ","), seen})
	}
	return e.table("NAME\tIPV4\tIPV6\tUSER\tTAGS\tLAST SEEN", rows)
}
