package adminapi

import (
	"meshwork.dev/coord/fsm"
	"meshwork.dev/policy"
)

// PolicyEngine compiles a policy against the state, as the control server does for the
// nodes, to run its tests and explain it.
type PolicyEngine interface {
	Test(store *fsm.Store, p *policy.Policy) error
	Explain(store *fsm.Store, p *policy.Policy, src, dst string) (policy.Verdict, error)
}
