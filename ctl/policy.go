package ctl

import (
	"context"
	"fmt"
	"os"

	"meshwork.dev/coord/api"
)

var policyCmd = group("policy", "Read and replace the mesh policy",
	&command{name: "get", summary: "Print the policy (HuJSON)", usage: "[--json]",
		examples: []string{"meshctl policy get > policy.hujson"}, run: policyGet},
	&command{name: "set", summary: "Replace the policy with a file's, after validating it", usage: "FILE",
		examples: []string{"meshctl policy set policy.hujson"}, run: policySet},
)

func policyGet(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var p api.Policy
	if err := e.call(ctx, "GET", "/v1/policy", nil, &p); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(p)
	}
	return e.printf("%s", p.Text)
}

func policySet(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	text, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("policy set: %w", err)
	}
	var p api.Policy
	if err := e.call(ctx, "PUT", "/v1/policy", api.Policy{Text: string(text)}, &p); err != nil {
		return fmt.Errorf("policy set %s: %w (the policy in force is unchanged)", fs.Arg(0), err)
	}
	return e.printf("policy version %d in force\n", p.Version)
}
