package ctl

import (
	"context"
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
))

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
		rows = append(rows, []string{n.Name, n.IPv4, n.IPv6, n.User, strings.Join(n.Tags, ","), when(&n.LastSeen)})
	}
	return e.table("NAME\tIPV4\tIPV6\tUSER\tTAGS\tLAST SEEN", rows)
}
