package ctl

import (
	"context"
	"fmt"
	"os"

	"meshwork.dev/coord/api"
)

var policyCmd = group("policy", "Read, test, explain and replace the mesh policy",
	&command{name: "get", summary: "Print the policy (HuJSON)", usage: "[--json]",
		examples: []string{"meshctl policy get > policy.hujson"}, run: policyGet},
	&command{name: "set", summary: "Replace the policy with a file's, after validating it", usage: "FILE",
		examples: []string{"meshctl policy set policy.hujson"}, run: policySet},
	&command{name: "test", summary: "Run a policy file's tests against the mesh now, without setting it", usage: "FILE",
		examples: []string{"meshctl policy test policy.hujson"}, run: policyTest},
	&command{name: "explain", summary: "Say whether SRC may reach DST:PORT under the policy in force, and which rule allows it", usage: "SRC DST:PORT [--json]",
		examples: []string{"meshctl policy explain alice ws:api:22", "meshctl policy explain ws:api env:staging/db:5432"}, run: policyExplain},
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

func policyTest(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	text, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("policy test: %w", err)
	}
	var res api.PolicyTestResult
	if err := e.call(ctx, "POST", "/v1/policy/test", api.Policy{Text: string(text)}, &res); err != nil {
		return fmt.Errorf("policy test %s: %w", fs.Arg(0), err)
	}
	return e.printf("%s: valid, %d tests pass (not set: meshctl policy set %s)\n", fs.Arg(0), res.Tests, fs.Arg(0))
}

func policyExplain(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if err := e.args(fs, args, 2); err != nil {
		return err
	}
	req := api.PolicyExplainRequest{Src: fs.Arg(0), Dst: fs.Arg(1)}
	var v api.PolicyVerdict
	if err := e.call(ctx, "POST", "/v1/policy/explain", req, &v); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(v)
	}
	verdict := "denied"
	if v.Allowed {
		verdict = "allowed"
	}
	return e.printf("%s → %s: %s: %s\n", req.Src, req.Dst, verdict, v.Text)
}
