package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// cliRun is one run of `caddy target-groups …`.
type cliRun struct {
	args           []string
	stdout, stderr string
	code           int
}

// cliTool runs the built binary's `caddy target-groups` against a Caddy
// process. Its environment points CADDY_ADMIN at a port nothing listens on,
// so that no run finds another Caddy by chance.
type cliTool struct {
	t     *testing.T
	bin   string
	admin string
	env   []string
}

// cliBinary skips a test of the CLI unless CADDY_BINARY names a Caddy built
// with the plugin (make test builds one).
func cliBinary(t *testing.T) {
	t.Helper()
	if os.Getenv("CADDY_BINARY") == "" {
		t.Skip("CADDY_BINARY is unset: set it to a Caddy built with the plugin (CADDY_OUTPUT=/tmp/caddy scripts/build-caddy.sh) to run the tests of `caddy target-groups`")
	}
}

func newCLITool(t *testing.T, p *caddyProc) *cliTool {
	home := t.TempDir()
	return &cliTool{t: t, bin: p.bin, admin: p.admin, env: []string{
		fmt.Sprintf("CADDY_ADMIN=127.0.0.1:%d", freePort(t)), "HOME=" + home, "XDG_DATA_HOME=" + home, "XDG_CONFIG_HOME=" + home,
	}}
}

// raw runs the command with args as they are, and env added.
func (c *cliTool) raw(env []string, args ...string) cliRun {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"target-groups"}, args...)...)
	cmd.Env = append(append(os.Environ(), c.env...), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	r := cliRun{args: args}
	err := cmd.Run()
	r.stdout, r.stderr = out.String(), errOut.String()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		c.t.Errorf("caddy target-groups %q: %v", args, err)
		r.code = -1
	}
	return r
}

// run runs the command against the process (--address).
func (c *cliTool) run(args ...string) cliRun {
	c.t.Helper()
	return c.raw(nil, append(args, "--address", c.admin)...)
}

// ok runs the command, which must succeed without writing on stderr.
// Like every method of cliTool, it reports failures with Errorf, so that
// commands can run in parallel (cliParallel).
func (c *cliTool) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 || r.stderr != "" {
		c.t.Errorf("caddy target-groups %q: exit status %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// json runs the command with --output json and decodes its output.
func (c *cliTool) json(out any, args ...string) {
	c.t.Helper()
	s := c.ok(append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(s), out); err != nil {
		c.t.Errorf("caddy target-groups %q --output json: %v\n%s", args, err, s)
	}
}

// fails runs the command, which must fail with exit status code and
// exactly stderr (a prefix of it, if stderr ends with "…"), printing
// nothing on stdout.
func (c *cliTool) fails(code int, stderr string, args ...string) {
	c.t.Helper()
	c.check(c.run(args...), code, stderr)
}

func (c *cliTool) check(r cliRun, code int, stderr string) {
	c.t.Helper()
	prefix, isPrefix := strings.CutSuffix(stderr, "…")
	if r.code != code || r.stdout != "" || !isPrefix && r.stderr != stderr+"\n" || isPrefix && !strings.HasPrefix(r.stderr, prefix) {
		c.t.Errorf("caddy target-groups %q: exit status %d, stdout %q, stderr %q; want exit status %d, no stdout, stderr %q", r.args, r.code, r.stdout, r.stderr, code, stderr)
	}
}

// cliParallel runs fns at once: each run of the race-detector Caddy takes
// half a second to start.
func cliParallel(fns ...func()) {
	var wg sync.WaitGroup
	for _, f := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	wg.Wait()
}

// tableRows reads a table the command printed: the cells of each row,
// trimmed, its title a row of one cell. Every line of a table is as wide.
func tableRows(t *testing.T, what, out string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var rows [][]string
	for _, l := range lines {
		if len(l) != len(lines[0]) {
			t.Errorf("%s: the lines of the table are not as wide:\n%s", what, out)
		}
		if !strings.HasPrefix(l, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// hasRows fails the test unless the table out has each row of want: its
// first cells, "*" standing for any value.
func hasRows(t *testing.T, what, out string, want ...[]string) {
	t.Helper()
	rows := tableRows(t, what, out)
	for _, w := range want {
		found := false
		for _, r := range rows {
			match := len(r) >= len(w)
			for i := 0; match && i < len(w); i++ {
				match = w[i] == "*" || w[i] == r[i]
			}
			found = found || match
		}
		if !found {
			t.Errorf("%s: no row %q in\n%s", what, w, out)
		}
	}
}

func row(cells ...any) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = fmt.Sprint(c)
	}
	return out
}

// cliHealthJSON is DescribeTargetHealth as --output json prints it.
type cliHealthJSON struct {
	Targets []struct {
		Target struct {
			ID   string `json:"id"`
			Port int    `json:"port"`
			AZ   string `json:"availability_zone"`
		} `json:"target"`
		TargetHealth struct {
			State  string `json:"state"`
			Reason string `json:"reason"`
		} `json:"target_health"`
		InFlight int64 `json:"in_flight"`
	} `json:"targets"`
}

func (h cliHealthJSON) states() map[int]string {
	out := map[int]string{}
	for _, t := range h.Targets {
		out[t.Target.Port] = t.TargetHealth.State + "/" + t.TargetHealth.Reason
	}
	return out
}

// TestCLI drives `caddy target-groups` of the built binary through every
// command, in table and JSON output, against a Caddy process.
func TestCLI(t *testing.T) {
	cliBinary(t)
	t.Parallel()
	p := newCaddyProc(t)
	p.start(p.expand(caddyConfig{
		groups: map[string]any{"web": `{"health_check": {"interval": "5s", "timeout": "2s"}}`},
		routes: groupRoutes("web"),
	}.json()))
	tg := newCLITool(t, p)
	a, b := newBackend(t, "a"), newBackend(t, "b")

	// Help, create-target-group, and the failures that need no group of the
	// API, at once. create-target-group prints a table, then the same call
	// again answers the existing group (identical settings), as JSON.
	create := []string{"create-target-group", "--name", "api", "--port", fmt.Sprint(a.port()), "--health-check-path", "/health",
		"--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "2", "--healthy-threshold-count", "2",
		"--matcher", "HttpCode=200-299", "--attributes", "Key=deregistration_delay.timeout_seconds,Value=0"}
	var api struct {
		Name, ID, ARN string
		HealthCheck   struct {
			HealthyThreshold int `json:"healthy_threshold"`
		} `json:"health_check"`
	}
	fails := func(code int, stderr string, args ...string) func() {
		return func() { tg.fails(code, stderr, args...) }
	}
	cliParallel(
		func() {
			help, err := exec.Command(p.bin, "help", "target-groups").CombinedOutput()
			if err != nil {
				t.Errorf("caddy help target-groups: %v\n%s", err, help)
			}
			for _, want := range []string{"describe-target-groups", "create-target-group", "modify-target-group ", "delete-target-group",
				"describe-target-group-attributes", "modify-target-group-attributes", "register-targets", "deregister-targets", "describe-target-health",
				"wait target-in-service", "wait target-deregistered", "--address", "CADDY_ADMIN", "--output table|json", "An error occurred (<Code>): <message>",
				"$ caddy target-groups register-targets --target-group api"} {
				if !strings.Contains(string(help), want) {
					t.Errorf("caddy help target-groups: no %q in\n%s", want, help)
				}
			}
		},
		func() {
			if out := tg.ok("register-targets", "--help"); !strings.Contains(out, "--targets Id=...") || !strings.Contains(out, "(RegisterTargets)") {
				t.Errorf("register-targets --help:\n%s", out)
			}
		},
		func() {
			out := tg.ok(create...)
			hasRows(t, "create-target-group", out, row("CreateTargetGroup"), row("TargetGroupName", "api"), row("HealthCheckPath", "/health"),
				row("HealthCheckIntervalSeconds", 5), row("HealthyThresholdCount", 2), row("Matcher", "HttpCode=200-299"), row("Port", a.port()), row("Source", "api"))
			tg.json(&api, create...)
		},
		// The admin API's code and message, exit status 1.
		fails(1, `An error occurred (ResourceNotFoundException): target group "nope" not found`, "describe-target-health", "--target-group", "nope"),
		fails(1, "An error occurred (OperationNotPermitted): target group \"web\" is declared in the config…", "modify-target-group-attributes", "--target-group", "web", "--attributes", "Key=stickiness.enabled,Value=true"),
		fails(1, "An error occurred (ValidationException): targets[0].port: 70000 is outside 1-65535", "register-targets", "--target-group", "web", "--targets", "Id=127.0.0.1,Port=70000"),
		// The command's own.
		fails(1, "An error occurred (ParamValidation): Error parsing parameter '--targets': target 1 has no Id", "register-targets", "--target-group", "web", "--targets", "Port=80"),
		fails(1, "An error occurred (ParamValidation): --target-group is required", "describe-target-health"),
		fails(1, "An error occurred (ParamValidation): --output \"yaml\": must be table or json", "describe-target-groups", "--output", "yaml"),
		fails(1, `An error occurred (ParamValidation): unexpected argument "web": every parameter is a flag (see caddy help target-groups describe-target-health)`, "describe-target-health", "web"),
		fails(1, "An error occurred (ParamValidation): unknown flag: --bogus", "describe-target-groups", "--bogus"),
		func() {
			tg.check(tg.raw(nil, "describe-targets"), 1, `An error occurred (ParamValidation): unknown command "describe-targets" for "caddy target-groups"…`)
		},
	)
	if api.Name != "api" || !strings.HasPrefix(api.ID, "tg-") || !strings.HasPrefix(api.ARN, "arn:") || api.HealthCheck.HealthyThreshold != 2 {
		t.Fatalf("create-target-group --output json: %+v", api)
	}

	// register-targets, by id, with two targets after one --targets, and
	// wait target-in-service.
	out := tg.ok("register-targets", "--target-group", api.ID, "--targets", fmt.Sprintf("Id=127.0.0.1,Port=%d,AvailabilityZone=a", a.port()), fmt.Sprintf("Id=127.0.0.1,Port=%d", b.port()))
	hasRows(t, "register-targets", out, row("RegisterTargets"), row("Id", "Port", "AvailabilityZone", "State", "Reason", "InFlight", "Description"),
		row("127.0.0.1", a.port(), "a", "*"), row("127.0.0.1", b.port(), "", "*"))
	tg.ok("wait", "target-in-service", "--target-group", "api", "--timeout", "15s")

	// The describe commands.
	latticeARN := "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/" + api.ID
	cliParallel(
		func() {
			out := tg.ok("describe-target-groups")
			hasRows(t, "describe-target-groups", out, row("DescribeTargetGroups"), row("Name", "Id", "Protocol", "Port", "TargetType", "HealthCheck", "Interval", "Targets", "Source"),
				row("api", api.ID, "HTTP", a.port(), "ip", "HTTP /health", "5s", 2, "api"), row("web", "*", "HTTP", 80, "ip", "HTTP /", "5s", 0, "config"))
		},
		func() {
			var groups struct {
				TargetGroups []struct{ Name, ID string } `json:"target_groups"`
			}
			tg.json(&groups, "describe-target-groups", "--names", "web", "api")
			if len(groups.TargetGroups) != 2 {
				t.Errorf("describe-target-groups --names web api --output json: %+v", groups)
			}
		},
		func() {
			var groups struct {
				TargetGroups []struct{ Name, ID string } `json:"target_groups"`
			}
			tg.json(&groups, "describe-target-groups", "--target-group-arns", api.ID)
			if len(groups.TargetGroups) != 1 || groups.TargetGroups[0].Name != "api" {
				t.Errorf("describe-target-groups --target-group-arns <id> --output json: %+v", groups)
			}
			tg.json(&groups, "describe-target-groups", "--target-group-arns", api.ARN, latticeARN)
			if len(groups.TargetGroups) != 1 || groups.TargetGroups[0].Name != "api" {
				t.Errorf("describe-target-groups --target-group-arns <ELBv2 ARN> <Lattice ARN> --output json: %+v", groups)
			}
		},
		func() {
			out := tg.ok("describe-target-health", "--target-group", latticeARN)
			hasRows(t, "describe-target-health --target-group <Lattice ARN>", out, row("DescribeTargetHealth"), row("Id", "Port", "AvailabilityZone", "State", "Reason", "InFlight", "Description"),
				row("127.0.0.1", a.port(), "a", "healthy", "", 0, ""), row("127.0.0.1", b.port(), "", "healthy", "", 0, ""))
		},
		fails(1, `An error occurred (ResourceNotFoundException): target group "nope" not found`, "describe-target-groups", "--names", "api,nope"),
		fails(1, `An error occurred (ResourceNotFoundException): target group "tg-00000000000000000" not found`, "describe-target-health", "--target-group", "tg-00000000000000000"),
		func() {
			out := tg.ok("describe-target-health", "--target-group", api.ARN)
			hasRows(t, "describe-target-health", out, row("DescribeTargetHealth"), row("Id", "Port", "AvailabilityZone", "State", "Reason", "InFlight", "Description"),
				row("127.0.0.1", a.port(), "a", "healthy", "", 0, ""), row("127.0.0.1", b.port(), "", "healthy", "", 0, ""))
		},
		func() {
			var h cliHealthJSON
			tg.json(&h, "describe-target-health", "--target-group", "api", "--targets", fmt.Sprintf(`[{"Id":"127.0.0.1","Port":%d},{"Id":"127.0.0.1","Port":1}]`, a.port()))
			if s := h.states(); len(s) != 2 || s[a.port()] != "healthy/" || s[1] != "unused/Target.NotRegistered" {
				t.Errorf("describe-target-health --targets <JSON> --output json: %+v", h)
			}
		},
		func() {
			out := tg.ok("describe-target-group-attributes", "--target-group", "api")
			hasRows(t, "describe-target-group-attributes", out, row("DescribeTargetGroupAttributes"), row("Key", "Value"), row("deregistration_delay.timeout_seconds", 0), row("stickiness.enabled", false))
		},
	)

	// The modify commands, and deregister-targets then wait
	// target-deregistered; a waiter that times out exits 255.
	bTarget := fmt.Sprintf("Id=127.0.0.1,Port=%d", b.port())
	cliParallel(
		func() {
			out := tg.ok("modify-target-group", "--target-group", api.ARN, "--healthy-threshold-count", "3", "--matcher", "HttpCode=200")
			hasRows(t, "modify-target-group", out, row("ModifyTargetGroup"), row("HealthyThresholdCount", 3), row("Matcher", "HttpCode=200"), row("HealthCheckPath", "/health"))
			var g struct {
				HealthCheck struct {
					HealthyThreshold   int `json:"healthy_threshold"`
					UnhealthyThreshold int `json:"unhealthy_threshold"`
				} `json:"health_check"`
			}
			tg.json(&g, "modify-target-group", "--target-group-arn", api.ARN, "--unhealthy-threshold-count", "3")
			if g.HealthCheck.HealthyThreshold != 3 || g.HealthCheck.UnhealthyThreshold != 3 {
				t.Errorf("modify-target-group --output json: %+v", g)
			}
		},
		func() {
			out := tg.ok("modify-target-group-attributes", "--target-group", "api", "--attributes", "Key=stickiness.enabled,Value=true", "Key=slow_start.duration_seconds,Value=30")
			hasRows(t, "modify-target-group-attributes", out, row("ModifyTargetGroupAttributes"), row("stickiness.enabled", true), row("slow_start.duration_seconds", 30))
			var attrs struct{ Attributes map[string]string }
			tg.json(&attrs, "modify-target-group-attributes", "--target-group", "api", "--attributes", `[{"Key":"slow_start.duration_seconds","Value":"0"}]`)
			if attrs.Attributes["slow_start.duration_seconds"] != "0" || attrs.Attributes["stickiness.enabled"] != "true" || attrs.Attributes["deregistration_delay.timeout_seconds"] != "0" {
				t.Errorf("modify-target-group-attributes --output json: %v", attrs.Attributes)
			}
		},
		func() {
			out := tg.ok("deregister-targets", "--target-group", "api", "--targets", bTarget)
			hasRows(t, "deregister-targets", out, row("DeregisterTargets"), row("127.0.0.1", b.port(), "", "*"))
			tg.ok("wait", "target-deregistered", "--target-group", "api", "--targets", bTarget, "--timeout", "10s")
			var h cliHealthJSON
			tg.json(&h, "deregister-targets", "--target-group", "api", "--targets", bTarget)
			if s := h.states(); s[b.port()] != "unused/Target.NotRegistered" {
				t.Errorf("deregister-targets --output json of a deregistered target: %+v", h)
			}
			start := time.Now()
			cliParallel(
				fails(255, fmt.Sprintf("Waiter TargetInService failed: Max attempts exceeded: not done after 1.5s (--timeout): 127.0.0.1:%d is unused (Target.NotRegistered)", b.port()),
					"wait", "target-in-service", "--target-group", "api", "--targets", bTarget, "--timeout", "1.5s", "--poll-interval", "200ms"),
				fails(255, fmt.Sprintf("Waiter TargetDeregistered failed: Max attempts exceeded: not done after 1s (--timeout): 127.0.0.1:%d is …", a.port()),
					"wait", "target-deregistered", "--target-group", "api", "--timeout", "1s"),
			)
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("waiters with --timeout 1.5s and 1s took %s", d)
			}
		},
	)

	// delete-target-group: nothing printed, {} as JSON.
	if out := tg.ok("delete-target-group", "--target-group", api.ID); out != "" {
		t.Errorf("delete-target-group printed %q", out)
	}
	tg.ok(create...)
	var empty map[string]any
	tg.json(&empty, "delete-target-group", "--target-group", "api")
	if empty == nil || len(empty) != 0 {
		t.Errorf("delete-target-group --output json: %v", empty)
	}
}

// TestCLIAddress finds the admin endpoint as other caddy commands do:
// --address, else --config's admin address, else CADDY_ADMIN, else
// localhost:2019; one that does not answer is an EndpointConnectionError.
func TestCLIAddress(t *testing.T) {
	cliBinary(t)
	t.Parallel()
	p := newCaddyProc(t)
	p.start(p.expand(caddyConfig{groups: map[string]any{"web": `{"health_check": {"interval": "5s", "timeout": "2s"}}`}}.json()))
	tg := newCLITool(t, p)
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	here := "CADDY_ADMIN=" + p.admin
	config := filepath.Join(p.dir, "caddy.json") // its admin.listen is p.admin
	deadConfig := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(deadConfig, []byte("{\n\tadmin "+dead+"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noAdmin := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(noAdmin, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var checks []func()
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"--address", p.admin}},
		{[]string{"CADDY_ADMIN=" + dead}, []string{"--address", p.admin}},
		{[]string{"CADDY_ADMIN=" + dead}, []string{"--config", config}},
		{nil, []string{"--address", p.admin, "--config", deadConfig, "--adapter", "caddyfile"}},
		{[]string{here}, nil},
		{[]string{here}, []string{"--config", noAdmin}},
	} {
		checks = append(checks, func() {
			r := tg.raw(tc.env, append([]string{"describe-target-groups", "--output", "json"}, tc.args...)...)
			if r.code != 0 || !strings.Contains(r.stdout, `"name": "web"`) {
				t.Errorf("env %q, flags %q: exit status %d\n%s%s", tc.env, tc.args, r.code, r.stdout, r.stderr)
			}
		})
	}
	want := fmt.Sprintf(`An error occurred (EndpointConnectionError): Could not connect to the endpoint URL: "http://%s/target-groups/": dial tcp %s: connect: connection refused`, dead, dead)
	missing := filepath.Join(t.TempDir(), "missing.json")
	cliParallel(append(checks,
		func() { tg.check(tg.raw([]string{"CADDY_ADMIN=" + dead}, "describe-target-groups"), 1, want) },
		func() { tg.check(tg.raw(nil, "describe-target-groups", "--config", deadConfig), 1, want) }, // a Caddyfile by its name
		func() { tg.check(tg.raw(nil, "describe-target-groups", "--address", dead), 1, want) },
		func() {
			tg.check(tg.raw(nil, "describe-target-groups", "--config", missing), 1, "An error occurred (ParamValidation): finding the admin address in --config "+missing+": open "+missing+": no such file or directory")
		},
	)...)
}
