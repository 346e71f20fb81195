package awsclients

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/vpclattice"
	"github.com/aws/aws-sdk-go-v2/service/vpclattice/types"
)

// latticeClient is the AWS SDK for Go's VPC Lattice client pointed at a
// Caddy's admin endpoint, with dummy credentials: Caddy checks no
// signature.
func latticeClient(c *caddy) *vpclattice.Client {
	return vpclattice.New(vpclattice.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(c.admin + "/vpc-lattice"),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
}

// targetStatuses lists a group's targets by ListTargets, a page of one
// at a time so that nextToken is followed too.
func targetStatuses(t *testing.T, ctx context.Context, lc *vpclattice.Client, group string) map[string]types.TargetStatus {
	t.Helper()
	out := map[string]types.TargetStatus{}
	p := vpclattice.NewListTargetsPaginator(lc, &vpclattice.ListTargetsInput{TargetGroupIdentifier: aws.String(group), MaxResults: aws.Int32(1)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("ListTargets: %v", err)
		}
		for _, it := range page.Items {
			out[fmt.Sprintf("%s:%d", aws.ToString(it.Id), aws.ToInt32(it.Port))] = it.Status
		}
	}
	return out
}

// The Go SDK's VPC Lattice client, unchanged, drives a target group's life
// through Caddy: create with the seed's members, register two backends,
// wait for them to be healthy, route traffic, change the health check,
// tag, deregister, delete; and gets the typed errors users hit first.
func TestLatticeGoSDK(t *testing.T) {
	const name = "web-lattice"
	c := startCaddy(t, []string{name}, nil)
	lc := latticeClient(c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b1, b2 := newBackend(t, "one"), newBackend(t, "two")

	created, err := lc.CreateTargetGroup(ctx, &vpclattice.CreateTargetGroupInput{
		Name: aws.String(name),
		Type: types.TargetGroupTypeIp,
		Config: &types.TargetGroupConfig{
			Port:            aws.Int32(int32(b1.port)),
			Protocol:        types.TargetGroupProtocolHttp,
			ProtocolVersion: types.TargetGroupProtocolVersionHttp1,
			IpAddressType:   types.IpAddressTypeIpv4,
			VpcIdentifier:   aws.String("vpc-0123456789abcdef0"),
			HealthCheck: &types.HealthCheckConfig{
				Enabled:                    aws.Bool(true),
				Protocol:                   types.TargetGroupProtocolHttp,
				ProtocolVersion:            types.HealthCheckProtocolVersionHttp1,
				Path:                       aws.String("/"),
				HealthCheckIntervalSeconds: aws.Int32(5),
				HealthCheckTimeoutSeconds:  aws.Int32(2),
				HealthyThresholdCount:      aws.Int32(2),
				UnhealthyThresholdCount:    aws.Int32(2),
				Matcher:                    &types.MatcherMemberHttpCode{Value: "200"},
			},
		},
		Tags: map[string]string{"env": "test"},
	})
	if err != nil {
		t.Fatalf("CreateTargetGroup: %v", err)
	}
	id, arn := aws.ToString(created.Id), aws.ToString(created.Arn)
	if created.Status != types.TargetGroupStatusActive || created.Type != types.TargetGroupTypeIp || aws.ToString(created.Name) != name ||
		arn != "arn:aws:vpc-lattice:us-east-1:000000000000:targetgroup/"+id {
		t.Fatalf("CreateTargetGroup answered %+v", created)
	}
	cfg := created.Config
	hc := cfg.HealthCheck
	if aws.ToInt32(cfg.Port) != int32(b1.port) || cfg.Protocol != "HTTP" || cfg.ProtocolVersion != "HTTP1" || cfg.IpAddressType != "IPV4" ||
		aws.ToString(cfg.VpcIdentifier) != "vpc-0123456789abcdef0" || hc == nil || !aws.ToBool(hc.Enabled) ||
		aws.ToInt32(hc.HealthCheckIntervalSeconds) != 5 || aws.ToInt32(hc.HealthCheckTimeoutSeconds) != 2 ||
		aws.ToInt32(hc.HealthyThresholdCount) != 2 || aws.ToInt32(hc.UnhealthyThresholdCount) != 2 || aws.ToString(hc.Path) != "/" {
		t.Fatalf("config answered %+v, health check %+v", cfg, hc)
	}
	if m, ok := hc.Matcher.(*types.MatcherMemberHttpCode); !ok || m.Value != "200" {
		t.Fatalf("matcher %#v", hc.Matcher)
	}

	// The JSON API sees the same group.
	resp, err := http.Get(c.admin + "/target-groups/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var view struct{ ID, Source string }
	_ = json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || view.ID != id || view.Source != "api" {
		t.Fatalf("GET /target-groups/%s: %d %+v, want id %s", name, resp.StatusCode, view, id)
	}

	reg, err := lc.RegisterTargets(ctx, &vpclattice.RegisterTargetsInput{
		TargetGroupIdentifier: aws.String(arn),
		Targets:               []types.Target{{Id: aws.String("127.0.0.1")}, {Id: aws.String("127.0.0.1"), Port: aws.Int32(int32(b2.port))}},
	})
	if err != nil || len(reg.Successful) != 2 || len(reg.Unsuccessful) != 0 {
		t.Fatalf("RegisterTargets: %v %+v", err, reg)
	}
	one, two := fmt.Sprintf("127.0.0.1:%d", b1.port), fmt.Sprintf("127.0.0.1:%d", b2.port)
	waitFor(t, "both targets HEALTHY in ListTargets", 30*time.Second, func() bool {
		s := targetStatuses(t, ctx, lc, id)
		return s[one] == types.TargetStatusHealthy && s[two] == types.TargetStatusHealthy
	})
	c.servedBy("/"+name+"/", "one", "two")

	got, err := lc.GetTargetGroup(ctx, &vpclattice.GetTargetGroupInput{TargetGroupIdentifier: aws.String(arn)})
	if err != nil || aws.ToString(got.Id) != id || got.CreatedAt == nil || got.LastUpdatedAt == nil || got.ServiceArns == nil {
		t.Fatalf("GetTargetGroup: %v %+v", err, got)
	}
	var listed []string
	groups := vpclattice.NewListTargetGroupsPaginator(lc, &vpclattice.ListTargetGroupsInput{TargetGroupType: types.TargetGroupTypeIp})
	for groups.HasMorePages() {
		page, err := groups.NextPage(ctx)
		if err != nil {
			t.Fatalf("ListTargetGroups: %v", err)
		}
		for _, it := range page.Items {
			listed = append(listed, aws.ToString(it.Id))
		}
	}
	if !slices.Contains(listed, id) {
		t.Fatalf("ListTargetGroups %v lacks %s", listed, id)
	}

	upd, err := lc.UpdateTargetGroup(ctx, &vpclattice.UpdateTargetGroupInput{
		TargetGroupIdentifier: aws.String(id),
		HealthCheck:           &types.HealthCheckConfig{HealthyThresholdCount: aws.Int32(3)},
	})
	if err != nil || aws.ToInt32(upd.Config.HealthCheck.HealthyThresholdCount) != 3 || aws.ToInt32(upd.Config.HealthCheck.HealthCheckIntervalSeconds) != 5 {
		t.Fatalf("UpdateTargetGroup: %v %+v", err, upd)
	}

	if _, err := lc.TagResource(ctx, &vpclattice.TagResourceInput{ResourceArn: aws.String(arn), Tags: map[string]string{"team": "web"}}); err != nil {
		t.Fatalf("TagResource: %v", err)
	}
	if _, err := lc.UntagResource(ctx, &vpclattice.UntagResourceInput{ResourceArn: aws.String(arn), TagKeys: []string{"env"}}); err != nil {
		t.Fatalf("UntagResource: %v", err)
	}
	tags, err := lc.ListTagsForResource(ctx, &vpclattice.ListTagsForResourceInput{ResourceArn: aws.String(arn)})
	if err != nil || len(tags.Tags) != 1 || tags.Tags["team"] != "web" {
		t.Fatalf("ListTagsForResource: %v %+v", err, tags)
	}

	// The errors users hit first, typed.
	var nf *types.ResourceNotFoundException
	if _, err := lc.GetTargetGroup(ctx, &vpclattice.GetTargetGroupInput{TargetGroupIdentifier: aws.String("tg-0123456789abcdef0")}); !errors.As(err, &nf) || aws.ToString(nf.ResourceId) != "tg-0123456789abcdef0" {
		t.Fatalf("GetTargetGroup of no group: %v", err)
	}
	var conflict *types.ConflictException
	if _, err := lc.CreateTargetGroup(ctx, &vpclattice.CreateTargetGroupInput{Name: aws.String(name), Type: types.TargetGroupTypeIp}); !errors.As(err, &conflict) || aws.ToString(conflict.ResourceId) != id {
		t.Fatalf("CreateTargetGroup of a taken name: %v", err)
	}
	var invalid *types.ValidationException
	_, err = lc.CreateTargetGroup(ctx, &vpclattice.CreateTargetGroupInput{Name: aws.String("bad-group"), Type: types.TargetGroupTypeIp,
		Config: &types.TargetGroupConfig{Protocol: "UDP", HealthCheck: &types.HealthCheckConfig{HealthCheckIntervalSeconds: aws.Int32(1)}}})
	if !errors.As(err, &invalid) || invalid.Reason != types.ValidationExceptionReasonFieldValidationFailed || len(invalid.FieldList) != 2 ||
		aws.ToString(invalid.FieldList[0].Name) != "config.protocol" || aws.ToString(invalid.FieldList[1].Name) != "config.healthCheck.healthCheckIntervalSeconds" {
		t.Fatalf("CreateTargetGroup with bad members: %v %+v", err, invalid)
	}
	bad, err := lc.RegisterTargets(ctx, &vpclattice.RegisterTargetsInput{TargetGroupIdentifier: aws.String(id), Targets: []types.Target{{Id: aws.String("8.8.8.8")}}})
	if err != nil || len(bad.Unsuccessful) != 1 || aws.ToString(bad.Unsuccessful[0].FailureCode) != "InvalidTarget" {
		t.Fatalf("RegisterTargets of a public address: %v %+v", err, bad)
	}
	if _, err := lc.DeleteTargetGroup(ctx, &vpclattice.DeleteTargetGroupInput{TargetGroupIdentifier: aws.String(id)}); !errors.As(err, &conflict) {
		t.Fatalf("DeleteTargetGroup of a group a route uses: %v", err)
	}

	// Deregistered, a target drains and gets no new request.
	dereg, err := lc.DeregisterTargets(ctx, &vpclattice.DeregisterTargetsInput{TargetGroupIdentifier: aws.String(id), Targets: []types.Target{{Id: aws.String("127.0.0.1")}}})
	if err != nil || len(dereg.Successful) != 1 || aws.ToInt32(dereg.Successful[0].Port) != int32(b1.port) {
		t.Fatalf("DeregisterTargets: %v %+v", err, dereg)
	}
	if s := targetStatuses(t, ctx, lc, id); s[one] != types.TargetStatusDraining || s[two] != types.TargetStatusHealthy {
		t.Fatalf("after deregistering: %v", s)
	}
	for range 10 {
		if status, body := c.get("/" + name + "/"); status != http.StatusOK || body != "hello from two" {
			t.Fatalf("after deregistering: %d %q", status, body)
		}
	}

	// A group no route uses is deleted, twice over.
	scratch, err := lc.CreateTargetGroup(ctx, &vpclattice.CreateTargetGroupInput{Name: aws.String("scratch-lattice"), Type: types.TargetGroupTypeLambda})
	if err != nil || scratch.Config.LambdaEventStructureVersion != types.LambdaEventStructureVersionV1 {
		t.Fatalf("CreateTargetGroup LAMBDA: %v %+v", err, scratch)
	}
	for range 2 {
		del, err := lc.DeleteTargetGroup(ctx, &vpclattice.DeleteTargetGroupInput{TargetGroupIdentifier: scratch.Arn})
		if err != nil || aws.ToString(del.Id) != aws.ToString(scratch.Id) || del.Status != types.TargetGroupStatusDeleteInProgress {
			t.Fatalf("DeleteTargetGroup: %v %+v", err, del)
		}
	}
	if _, err := lc.GetTargetGroup(ctx, &vpclattice.GetTargetGroupInput{TargetGroupIdentifier: scratch.Id}); !errors.As(err, &nf) {
		t.Fatalf("GetTargetGroup of a deleted group: %v", err)
	}
}
