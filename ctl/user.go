package ctl

import (
	"context"

	"meshwork.dev/coord/api"
)

var userCmd = group("user", "Manage users (admins only)",
	&command{name: "create", summary: "Create a user", usage: "NAME [--role admin|member]",
		examples: []string{"meshctl user create alice", "meshctl user create bob --role admin"}, run: userCreate},
	&command{name: "list", summary: "List users", usage: "[--json]",
		examples: []string{"meshctl user list --json"}, run: userList},
	&command{name: "delete", summary: "Delete a user", usage: "NAME",
		examples: []string{"meshctl user delete alice"}, run: remover("/v1/users/", "deleted user %s")},
)

func userCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	role := fs.String("role", api.RoleMember, "`role`: admin or member")
	if err := e.args(fs, args, 1); err != nil {
		return err
	}
	var u api.User
	if err := e.call(ctx, "POST", "/v1/users", api.CreateUser{Name: fs.Arg(0), Role: *role}, &u); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(u)
	}
	return e.printf("created user %s (%s)\nnext: meshctl apikey create --user %s\n", u.Name, u.Role, u.Name)
}

func userList(ctx context.Context, e *env, args []string) error {
	if err := e.args(e.flags(), args, 0); err != nil {
		return err
	}
	var users []api.User
	if err := e.call(ctx, "GET", "/v1/users", nil, &users); err != nil {
		return err
	}
	if e.global.json {
		return e.printJSON(users)
	}
	var rows [][]string
	for _, u := range users {
		rows = append(rows, []string{u.Name, u.Role, when(&u.CreatedAt)})
	}
	return e.table("NAME\tROLE\tCREATED", rows)
}
