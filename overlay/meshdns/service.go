package meshdns

// ServiceName is the mesh name of service svc of environment env: <svc>.<env>.<domain>.
func ServiceName(svc, env, domain string) string { return svc + "." + env + "." + domain }
