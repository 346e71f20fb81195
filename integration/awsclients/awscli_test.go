package awsclients

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The ELBv2 Query API of a built Caddy, driven by the AWS CLI (aws elbv2)
// as a user types it, pointed at Caddy with --endpoint-url.

// awsCLI is the AWS CLI to test with: AWS_CLI, or Debian's package. Not
// the first aws on PATH, which may be a shim of another Python whose
// botocore is not the one the package was tested with.
func awsCLI(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("AWS_CLI")
	if bin == "" {
		bin = "/usr/bin/aws"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no AWS CLI at %s (apt-get install awscli, or set AWS_CLI): %v", bin, err)
	}
	return bin
}

// cli runs aws elbv2 commands against one Caddy, with no configuration or
// credentials of the user's: --no-sign-request, as Caddy verifies no
// signature.
type cli struct {
	t   *testing.T
	bin string
	env []string
	c   *caddy
}

func newCLI(t *testing.T, c *caddy) *cli {
	home := t.TempDir()
	none := filepath.Join(home, "none")
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "AWS_CONFIG_FILE=" + none, "AWS_SHARED_CREDENTIALS_FILE=" + none,
		"AWS_PAGER=", "AWS_EC2_METADATA_DISABLED=true", "LC_ALL=C.UTF-8"}
	return &cli{t: t, bin: awsCLI(t), env: env, c: c}
}

// run runs `aws elbv2 <args>` and returns its stdout, stderr and exit
// status.
func (a *cli) run(args ...string) (stdout, stderr string, status int) {
	a.t.Helper()
	full := append([]string{"--endpoint-url", a.c.admin + "/elbv2", "--region", "us-east-1", "--no-sign-request", "--output", "json", "elbv2"}, args...)
	cmd := exec.Command(a.bin, full...)
	cmd.Env = a.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		status = exit.ExitCode()
	case err != nil:
		a.t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), status
}

// ok runs a command that must succeed and decodes its JSON output into v
// (when not nil).
func (a *cli) ok(v any, args ...string) {
	a.t.Helper()
	stdout, stderr, status := a.run(args...)
	if status != 0 {
		a.t.Fatalf("aws elbv2 %s: exit status %d: %s", strings.Join(args, " "), status, stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(stdout), v); err != nil {
			a.t.Fatalf("aws elbv2 %s: %v: %s", strings.Join(args, " "), err, stdout)
		}
	}
}

// fails runs a command that Caddy must refuse: the CLI exits 254 (a
// service error) and prints the code and message as it prints AWS's.
func (a *cli) fails(want string, args ...string) {
	a.t.Helper()
	_, stderr, status := a.run(args...)
	if status != 254 || !strings.Contains(stderr, want) {
		a.t.Fatalf("aws elbv2 %s: exit status %d, stderr %q; want 254 and %q", strings.Join(args, " "), status, stderr, want)
	}
}

type cliGroups struct {
	TargetGroups []struct {
		TargetGroupArn, TargetGroupName, TargetType, HealthCheckPath string
		HealthCheckIntervalSeconds                                   int
		LoadBalancerArns                                             []string
	}
	NextMarker string
}

// A group's life as a user types it: create, register two backends, wait
// for them to be in service, traffic through Caddy, deregister one and
// wait for it to be gone, then the errors a user sees first.
func TestAWSCLIELBv2(t *testing.T) {
	c := startCaddy(t, []string{"web"}, nil)
	aws := newCLI(t, c)
	one, two := newBackend(t, "one"), newBackend(t, "two")

	var created cliGroups
	aws.ok(&created, "create-target-group", "--name", "web", "--protocol", "HTTP", "--port", "80", "--target-type", "ip",
		"--vpc-id", "vpc-0123456789abcdef0", "--health-check-path", "/health")
	if len(created.TargetGroups) != 1 {
		t.Fatalf("created %+v", created)
	}
	g := created.TargetGroups[0]
	if g.TargetGroupName != "web" || g.TargetType != "ip" || g.HealthCheckPath != "/health" || g.HealthCheckIntervalSeconds != 30 || g.LoadBalancerArns == nil {
		t.Fatalf("created %+v", g)
	}
	arn := g.TargetGroupArn
	aws.ok(nil, "modify-target-group-attributes", "--target-group-arn", arn, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=0")

	targets := []string{fmt.Sprintf("Id=127.0.0.1,Port=%d", one.port), fmt.Sprintf("Id=127.0.0.1,Port=%d", two.port)}
	aws.ok(nil, append([]string{"register-targets", "--target-group-arn", arn, "--targets"}, targets...)...)
	aws.ok(nil, append([]string{"wait", "target-in-service", "--target-group-arn", arn, "--targets"}, targets...)...)
	var health struct {
		TargetHealthDescriptions []struct {
			Target       struct{ Id string }
			TargetHealth struct{ State string }
		}
	}
	aws.ok(&health, "describe-target-health", "--target-group-arn", arn)
	if len(health.TargetHealthDescriptions) != 2 {
		t.Fatalf("health %+v", health)
	}
	for _, d := range health.TargetHealthDescriptions {
		if d.TargetHealth.State != "healthy" {
			t.Fatalf("health %+v", health)
		}
	}
	c.servedBy("/web/", "one", "two")

	aws.ok(nil, "deregister-targets", "--target-group-arn", arn, "--targets", targets[0])
	aws.ok(nil, "wait", "target-deregistered", "--target-group-arn", arn, "--targets", targets[0])
	for range 10 {
		if status, body := c.get("/web/"); status != http.StatusOK || body != "hello from two" {
			t.Fatalf("after deregistering one: %d %q", status, body)
		}
	}

	// Tags, and pages by hand: with --page-size the CLI leaves paging to
	// the user.
	aws.ok(nil, "add-tags", "--resource-arns", arn, "--tags", "Key=team,Value=web")
	var tags struct {
		TagDescriptions []struct {
			Tags []struct{ Key, Value string }
		}
	}
	aws.ok(&tags, "describe-tags", "--resource-arns", arn)
	if fmt.Sprint(tags.TagDescriptions) != "[{[{team web}]}]" {
		t.Fatalf("tags %+v", tags)
	}
	aws.ok(nil, "create-target-group", "--name", "scratch", "--target-type", "ip", "--port", "9000")
	var first, second cliGroups
	aws.ok(&first, "describe-target-groups", "--page-size", "1")
	aws.ok(&second, "describe-target-groups", "--page-size", "1", "--marker", first.NextMarker)
	if len(first.TargetGroups) != 1 || first.TargetGroups[0].TargetGroupName != "scratch" || first.NextMarker == "" ||
		len(second.TargetGroups) != 1 || second.TargetGroups[0].TargetGroupName != "web" || second.NextMarker != "" {
		t.Fatalf("pages %+v, %+v", first, second)
	}
	aws.ok(nil, "delete-target-group", "--target-group-arn", "scratch")

	aws.fails(`An error occurred (TargetGroupNotFound) when calling the DescribeTargetGroups operation: One or more target groups not found: "scratch"`,
		"describe-target-groups", "--names", "scratch")
	aws.fails("An error occurred (InvalidTarget) when calling the RegisterTargets operation: Targets.member.1.Id: 8.8.8.8 is outside the allowed CIDR blocks",
		"register-targets", "--target-group-arn", arn, "--targets", "Id=8.8.8.8")
	aws.fails(`An error occurred (DuplicateTargetGroupName) when calling the CreateTargetGroup operation: a target group named "web" already exists with other settings`,
		"create-target-group", "--name", "web", "--protocol", "HTTP", "--port", "81", "--target-type", "ip")
	aws.fails(`An error occurred (ResourceInUse) when calling the DeleteTargetGroup operation: target group "web" is used by a route of the running config`,
		"delete-target-group", "--target-group-arn", arn)
}
