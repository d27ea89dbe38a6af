package compose

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// full uses every key Meshwork runs.
const full = `
services:
  api:
    image: registry.example/api:${TAG:-1.2}
    command: ["serve", "--port", "8080"]
    entrypoint: /bin/api
    environment:
      REDIS: redis:6379
      MODE: ${MODE:-dev}
      LITERAL: $$HOME
    ports: ["8080:8080"]
    expose: ["9090"]
    depends_on:
      redis:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
      cache: {condition: service_started}
    restart: on-failure:5
    deploy:
      resources:
        limits: {cpus: "1.5", memory: 256M}
    user: "1000:1000"
    working_dir: /srv
    tmpfs: [/tmp]
    labels: {team: core}
    init: true
    hostname: api-host
    networks:
      default:
        aliases: [backend, web]
    configs:
      - source: app
        target: /etc/app.conf
        mode: 0440
    secrets: [token, dbpass]
  redis:
    image: redis:7
    command: redis-server --appendonly yes
    environment: ["A=1", "B=${B:-two}"]
    volumes:
      - data:/data
      - type: tmpfs
        target: /scratch
      - /anon
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 2s
      timeout: 1s
      retries: 30
      start_period: 5s
    restart: unless-stopped
    cap_add: [NET_BIND_SERVICE, CAP_CHOWN]
  migrate:
    image: migrate:1
    restart: "no"
    depends_on: [redis]
  cache:
    image: memcached
    restart: always
    volumes: [{type: volume, source: cachevol, target: /c, read_only: true}]
volumes:
  data: {}
  cachevol:
configs:
  app:
    content: |
      listen=8080
secrets:
  token:
    environment: API_TOKEN
  dbpass:
    environment: DB_PASSWORD
`

func TestLoad(t *testing.T) {
	got, err := Load("staging", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	want := &Project{
		Name:    "staging",
		Volumes: []string{"cachevol", "data"},
		Services: []Spec{
			{
				Name: "api", Image: "registry.example/api:1.2",
				Command:     []string{"serve", "--port", "8080"},
				Entrypoint:  []string{"/bin/api"},
				Environment: map[string]string{"REDIS": "redis:6379", "MODE": "dev", "LITERAL": "$HOME"},
				Ports:       []int{8080, 9090},
				DependsOn:   map[string]Condition{"redis": ServiceHealthy, "migrate": ServiceCompletedSuccessfully, "cache": ServiceStarted},
				Restart:     Restart{Policy: "on-failure", MaxRetries: 5},
				Limits:      Limits{CPUs: 1.5, MemoryBytes: 256 << 20},
				User:        "1000:1000", WorkingDir: "/srv", Tmpfs: []string{"/tmp"},
				Labels: map[string]string{"team": "core"}, Init: true, Hostname: "api-host",
				Aliases: []string{"backend", "web"},
				Configs: []File{{Name: "app", Target: "/etc/app.conf", Mode: 0o440, Content: Sensitive("listen=8080\n")}},
				Secrets: []File{
					{Name: "token", Target: "/run/secrets/token", FromEnv: "API_TOKEN"},
					{Name: "dbpass", Target: "/run/secrets/dbpass", FromEnv: "DB_PASSWORD"},
				},
			},
			{Name: "cache", Image: "memcached", Restart: Restart{Policy: "always"}, Volumes: []Mount{{Volume: "cachevol", Target: "/c", ReadOnly: true}}},
			{Name: "migrate", Image: "migrate:1", Restart: Restart{Policy: "no"}, DependsOn: map[string]Condition{"redis": ServiceStarted}},
			{
				Name: "redis", Image: "redis:7",
				Command:     []string{"redis-server", "--appendonly", "yes"},
				Environment: map[string]string{"A": "1", "B": "two"},
				Volumes:     []Mount{{Volume: "data", Target: "/data"}, {Target: "/anon"}},
				Tmpfs:       []string{"/scratch"},
				Healthcheck: &Healthcheck{Test: []string{"CMD", "redis-cli", "ping"}, Interval: 2 * time.Second, Timeout: time.Second, Retries: 30, StartPeriod: 5 * time.Second},
				Restart:     Restart{Policy: "unless-stopped"},
			},
		},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	if want, got := []Service{
		{Name: "api", Image: "registry.example/api:1.2", Ports: []int{8080, 9090}},
		{Name: "cache", Image: "memcached"},
		{Name: "migrate", Image: "migrate:1"},
		{Name: "redis", Image: "redis:7"},
	}, mustParse(t, full); !cmp.Equal(want, got, cmpopts.EquateEmpty()) {
		t.Errorf("Parse = %+v; want %+v", got, want)
	}
}

func mustParse(t *testing.T, yaml string) []Service {
	t.Helper()
	s, err := Parse("staging", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoadRestartPolicies(t *testing.T) {
	for in, want := range map[string]Restart{
		"":               {Policy: "no"},
		"no":             {Policy: "no"},
		"always":         {Policy: "always"},
		"on-failure":     {Policy: "on-failure"},
		"on-failure:3":   {Policy: "on-failure", MaxRetries: 3},
		"unless-stopped": {Policy: "unless-stopped"},
	} {
		y := "services:\n  web:\n    image: x\n"
		if in != "" {
			y += "    restart: \"" + in + "\"\n"
		}
		p, err := Load("env", []byte(y))
		if err != nil {
			t.Errorf("restart %q: %v", in, err)
			continue
		}
		if diff := cmp.Diff(want, p.Services[0].Restart); diff != "" {
			t.Errorf("restart %q (-want +got):\n%s", in, diff)
		}
	}
}

func svc(body string) string { return "services:\n  web:\n    image: x\n" + body }

// TestLoadRefuses: each key Meshwork does not run, and each broken file, is refused with the
// line it is on (counted as an editor does, from 1), the service, the key and the fix.
func TestLoadRefuses(t *testing.T) {
	many := "services:\n"
	for i := range 65 {
		many += "  s" + strings.Repeat("x", i) + ":\n    image: x\n"
	}
	for _, tc := range []struct {
		name, yaml string
		line       int      // the error starts "compose file line <line>: "
		want       []string // all must appear: service, key, fix
	}{
		{"build", "services:\n  web:\n    build: .\n", 3, []string{`"web"`, "build:", "set image:"}},
		{"no image", "services:\n  web:\n    command: x\n", 2, []string{`"web"`, "image:", "set image:"}},
		{"network_mode", svc("    network_mode: host\n"), 4, []string{`"web"`, "network_mode:", "remove network_mode"}},
		{"privileged", svc("    privileged: true\n"), 4, []string{`"web"`, "privileged:", "cap_add"}},
		{"privileged from a merge", "x-base: &base\n  privileged: true\nservices:\n  web:\n    image: x\n    <<: *base\n", 2, []string{`"web"`, "privileged:"}},
		{"pid host", svc("    pid: host\n"), 4, []string{`"web"`, "pid:", "remove pid: host"}},
		{"ipc host", svc("    ipc: host\n"), 4, []string{`"web"`, "ipc:", "remove ipc: host"}},
		{"devices", svc("    devices: [\"/dev/sda:/dev/sda\"]\n"), 4, []string{`"web"`, "devices:", "remove devices"}},
		{"cap_add", svc("    cap_add: [CHOWN, SYS_ADMIN]\n"), 4, []string{`"web"`, "cap_add:", "SYS_ADMIN", "default capabilities"}},
		{"cap_add item", svc("    cap_add:\n      - CHOWN\n      - SYS_ADMIN\n      - KILL\n"), 6, []string{`"web"`, "cap_add:", "SYS_ADMIN", "default capabilities"}},
		{"cap_add all", svc("    cap_add: [ALL]\n"), 4, []string{`"web"`, "cap_add:", "ALL"}},
		{"bind relative", svc("    volumes: [\"./d:/d\"]\n"), 4, []string{`"web"`, "volumes:", "bind mount", "named volume"}},
		{"bind absolute", svc("    volumes: [\"/srv:/d\"]\n"), 4, []string{`"web"`, "volumes:", "bind mount", "named volume"}},
		{"bind long", svc("    volumes: [{type: bind, source: /srv, target: /d}]\n"), 4, []string{`"web"`, "volumes:", "bind mount", "named volume"}},
		{"bind item", svc("    volumes:\n      - data:/data\n      - type: tmpfs\n        target: /t\n      - ./src:/src\nvolumes:\n  data: {}\n"), 8,
			[]string{`"web"`, "volumes:", "/src is a host bind mount", "named volume"}},
		{"undeclared volume", svc("    volumes: [\"data:/d\"]\n"), 4, []string{`"web"`, "volumes:", "top-level volumes"}},
		{"env_file", svc("    env_file: .env\n"), 4, []string{`"web"`, "env_file:", "under environment:"}},
		{"config file", svc("    configs: [c]\nconfigs:\n  c:\n    file: ./c.conf\n"), 7, []string{`"web"`, "configs:", "file:", "content:"}},
		{"secret file", svc("    secrets: [s]\nsecrets:\n  s:\n    file: ./s.txt\n"), 7, []string{`"web"`, "secrets:", "file:", "content:", "environment:"}},
		{"secret external", svc("    secrets: [s]\nsecrets:\n  s:\n    external: true\n"), 7, []string{`"web"`, "secrets:", "external"}},
		{"secret content", svc("    secrets: [s]\nsecrets:\n  s:\n    content: x\n"), 7, []string{"secrets.s", "content", "environment:"}},
		{"undefined secret", svc("    secrets:\n      - s\n"), 5, []string{`"web"`, "secrets:", "top-level secrets"}},
		{"65 services", many, 1, []string{"65 services", "at most 64", "split"}},
		{"upper-case name", "services:\n  Web:\n    image: x\n", 2, []string{`"Web"`, "DNS label", "web.<env>"}},
		{"underscore name", "services:\n  ok:\n    image: x\n  my_db:\n    image: x\n", 4, []string{`"my_db"`, "DNS label", "lower-case"}},
		{"long name", "services:\n  " + strings.Repeat("a", 64) + ":\n    image: x\n", 2, []string{"DNS label", "1-63"}},
		{"bad alias", svc("    networks:\n      default:\n        aliases:\n          - ok\n          - Bad_Alias\n"), 8, []string{`"web"`, "networks.aliases:", "DNS label"}},
		{"bad hostname", svc("    hostname: my_host\n"), 4, []string{`"web"`, "hostname:", "DNS label"}},
		{"unknown dependency", svc("    depends_on:\n      db:\n        condition: service_started\n"), 5, []string{`"web"`, "depends_on:", `"db"`, "name a service"}},
		{"unknown condition", "services:\n  db:\n    image: x\n" + svc("    depends_on:\n      db:\n        condition: later\n")[len("services:\n"):], 8,
			[]string{"services.web.depends_on.db.condition", "service_healthy"}},
		{"cycle", "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [c]\n  c:\n    image: x\n    depends_on: [a]\n", 4,
			[]string{`"a"`, "depends_on:", "a -> b -> c -> a", "remove one"}},
		{"self dependency", "services:\n  a:\n    image: x\n    depends_on: [a]\n", 4, []string{`"a"`, "depends_on:", "a -> a"}},
		{"variable without default", svc("    environment:\n      B: b\n      A: ${NOPE}\n"), 6, []string{`"web"`, "environment.A:", "NOPE", "${NOPE:-value}"}},
		{"image variable without default", "services:\n  web:\n    image: ${IMG}\n", 3, []string{`"web"`, "image:", "IMG", "${IMG:-value}"}},
		{"environment without value", svc("    environment:\n      - A=1\n      - FOO\n"), 6, []string{`"web"`, "environment:", "FOO=value"}},
		{"restart", svc("    restart: sometimes\n"), 4, []string{`"web"`, "restart:", "on-failure:N"}},
		{"expose", svc("    expose:\n      - \"80\"\n      - http\n"), 6, []string{`"web"`, "expose:", "port number"}},
		{"healthcheck retries", svc("    healthcheck:\n      test: [CMD, x]\n      retries: 99999999\n"), 6, []string{`"web"`, "healthcheck.retries:", "at most"}},
		{"volume driver", svc("volumes:\n  data:\n    driver: nfs\n"), 5, []string{`volume "data"`, "remove driver"}},
		{"unknown key", svc("    labels: {a: b}\n    bogus: 1\n"), 5, []string{"services.web.bogus", "remove it or correct its spelling"}},
		{"wrong type", svc("    deploy:\n      resources:\n        limits:\n          memory: lots\n"), 7, []string{"memory", "lots"}},
		{"duplicate key", svc("    command: a\n    command: b\n"), 5, []string{`"command" already defined at line 4`, "keep one"}},
		{"broken yaml", "services:\n  web:\n    image: x\n  bad: [\n", 4, []string{"not valid YAML at the end of the file", "left open"}},
		{"unclosed flow", "services:\n  web:\n    ports: [\"80\"\n  db:\n    image: y\n", 4, []string{"not valid YAML", "flow sequence that starts on line 3"}},
		// go.yaml.in/yaml/v4 says line 3 here (its parser counts from 0): the stray line is 4
		{"bad indent", "services:\n  web:\n    image: x\n   x: 1\n", 4, []string{"not valid YAML", "block mapping that starts on line 2"}},
		{"tab", "services:\n  web:\n\timage: x\n", 3, []string{"not valid YAML", "cannot start any token"}},
		{"unknown anchor", svc("    command: *nope\n"), 4, []string{"not valid YAML", "unknown anchor"}},
		{"empty", "services: {}\n", 1, []string{"no services"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("env", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Load accepted:\n%s", tc.yaml)
			}
			if at := fmt.Sprintf("compose file line %d: ", tc.line); !strings.HasPrefix(err.Error(), at) {
				t.Errorf("error %q does not start %q", err, at)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, perr := Parse("env", []byte(tc.yaml)); perr == nil || perr.Error() != err.Error() {
				t.Errorf("Parse = %v; want Load's error", perr)
			}
		})
	}
}

// TestSecretValueNotInErrors: a refused file that holds a secret never echoes its value.
func TestSecretValueNotInErrors(t *testing.T) {
	const value = "hunter2-xyzzy"
	for _, y := range []string{
		svc("    secrets: [s]\n    privileged: true\nsecrets:\n  s:\n    content: " + value + "\n"),
		svc("    secrets: [s]\nsecrets:\n  s:\n    content: " + value + "\n    file: ./f\n"),
		svc("    secrets: [s]\nsecrets:\n  s:\n    content: " + value + "\n    bogus: 1\n"),
		svc("    secrets: [s, t]\nsecrets:\n  s:\n    content: " + value + "\n"),
		svc("    secrets: [s]\n    environment: [\"P=" + value + "\", X]\nsecrets:\n  s:\n    content: ${NOPE}" + value + "\n"),
		svc("    secrets: [s]\nsecrets:\n  s:\n    content: [" + value + "]\n"),
	} {
		_, err := Load("env", []byte(y))
		if err == nil {
			t.Errorf("Load accepted:\n%s", y)
		} else if strings.Contains(err.Error(), value) {
			t.Errorf("error shows the secret: %v", err)
		}
	}
	p, err := Load("env", []byte(svc("    configs: [s]\nconfigs:\n  s:\n    content: "+value+"\n")))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(format, p); strings.Contains(s, value) {
			t.Errorf("Printf(%q) shows the secret: %s", format, s)
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(full)
	f.Add(svc("    depends_on: [web]\n"))
	f.Add(svc("    environment:\n      A: ${X:-${Y:-z}}\n"))
	f.Add("services:\n  a:\n    image: x\n    depends_on: {b: {condition: service_healthy}}\n  b:\n    image: y\n")
	f.Add("services:\n  web:\n    image: x\n    cap_add:\n      - SYS_ADMIN\n")
	f.Add("x-b: &b\n  privileged: true\nservices:\n  web:\n    image: x\n    <<: *b\n")
	f.Add("services:\n  web:\n    image: x\n  bad: [\n")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Load("env", []byte(s))
		if err != nil {
			checkLine(t, s, err)
			return
		}
		if len(p.Services) == 0 || len(p.Services) > maxServices {
			t.Fatalf("Load accepted %d services", len(p.Services))
		}
		order, err := StartOrder(p)
		if err != nil || len(order) != len(p.Services) {
			t.Fatalf("StartOrder of an accepted project: %d steps, %v", len(order), err)
		}
	})
}

// checkLine fails t unless err is a compose file's error whose line, if it says one, is in s.
func checkLine(t *testing.T, s string, err error) {
	var line int
	if _, serr := fmt.Sscanf(err.Error(), "compose file line %d:", &line); serr != nil {
		if !strings.HasPrefix(err.Error(), "compose file: ") {
			t.Fatalf("error %q does not start with the compose file", err)
		}
		return
	}
	if last := lineCount([]byte(s)); line < 1 || line > last {
		t.Fatalf("error %q names line %d of %d", err, line, last)
	}
}

func TestLoadHealthcheckForms(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want *Healthcheck
	}{
		{"    healthcheck:\n      test: curl -f http://localhost/\n", &Healthcheck{Test: []string{"CMD-SHELL", "curl -f http://localhost/"}}},
		{"    healthcheck:\n      test: [\"CMD-SHELL\", \"pg_isready\"]\n      retries: 3\n", &Healthcheck{Test: []string{"CMD-SHELL", "pg_isready"}, Retries: 3}},
		{"    healthcheck:\n      disable: true\n", nil},
		{"    healthcheck:\n      test: [\"NONE\"]\n", nil},
		{"", nil},
	} {
		p, err := Load("env", []byte(svc(tc.yaml)))
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if diff := cmp.Diff(tc.want, p.Services[0].Healthcheck); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.yaml, diff)
		}
	}
}
