package ctl

import (
	"context"

	"meshwork.dev/coord/api"
)

var clusterCmd = group("cluster", "See and change the coord replicas",
	&command{name: "status", summary: "Show leader, term, indexes and members", usage: "[--json]",
		examples: []string{"meshctl cluster status"}, run: clusterStatus},
	&command{name: "remove", summary: "Remove a replica from the cluster", usage: "ID",
		examples: []string{"meshctl cluster remove c3"}, run: remover("/v1/cluster/members/", "removed replica %s")},
	&command{name: "token", summary: "Print the token a new replica joins with", usage: "",
		examples: []string{"meshctl cluster token"}, run: clusterToken},
)

func clusterStatus(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var cl api.Cluster
	if err := e.call(ctx, "GET", "/v1/cluster", nil, &cl); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(cl)
	}
	e.printf("answered by %s (%s), leader %s, term %d, commit %d, applied %d\n\n",
		cl.ID, cl.State, cl.Leader, cl.Term, cl.CommitIndex, cl.AppliedIndex)
	var rows [][]string
	for _, m := range cl.Members {
		role := "follower"
		if m.Leader {
			role = "leader"
		}
		if !m.Voter {
			role += " (non-voter)"
		}
		rows = append(rows, []string{m.ID, m.Address, m.HTTP, role})
	}
	return e.table("ID\tCLUSTER ADDRESS\tHTTP\tROLE", rows)
}

func clusterToken(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var t struct {
		Token string `json:"token"`
	}
	if err := e.call(ctx, "GET", "/v1/cluster/token", nil, &t); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(t)
	}
	return e.printf("%s\n\nnext, on the new replica:\n  meshctl coord --state DIR --http ADDR --cluster ADDR --join %s --join-token %s\n",
		t.Token, e.global.coord, t.Token)
}
