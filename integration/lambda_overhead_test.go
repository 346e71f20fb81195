package integration_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// TestLambdaInvocationOverhead measures, and reports without judging, the
// round trip of a request through Caddy to the function in the emulator
// against an Invoke sent straight to the emulator with the AWS SDK, one
// at a time (the emulator runs one invocation at a time). Run it alone
// for figures worth reading:
//
//	CADDY_BINARY=… go test -run TestLambdaInvocationOverhead -v ./integration/
func TestLambdaInvocationOverhead(t *testing.T) {
	t.Parallel()
	const n = 300
	bins := buildLambdaBins(t)
	endpoint := startRIE(t, bins)
	p := lambdaCaddy(t, endpoint, "30s", nil)

	client := &http.Client{}
	viaCaddy := func() error {
		resp, err := client.Get("http://" + p.http + "/status/200")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	lc := lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), Credentials: aws.AnonymousCredentials{}})
	event := []byte(`{"requestContext":{"elb":{"targetGroupArn":"arn"}},"httpMethod":"GET","path":"/status/200","queryStringParameters":{},"headers":{"host":"x"},"body":"","isBase64Encoded":false}`)
	direct := func() error {
		out, err := lc.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("function"), Payload: event})
		if err == nil && out.StatusCode != 200 {
			err = fmt.Errorf("status %d", out.StatusCode)
		}
		return err
	}
	measure := func(name string, f func() error) {
		for range 20 { // warm: the function's first start, connections
			if err := f(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		d := make([]time.Duration, n)
		for i := range d {
			start := time.Now()
			if err := f(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			d[i] = time.Since(start)
		}
		slices.Sort(d)
		t.Logf("%-32s n=%d p50=%s p99=%s max=%s", name, n, d[n/2], d[n*99/100], d[n-1])
	}
	measure("client → Caddy → emulator", viaCaddy)
	measure("Invoke → emulator (AWS SDK)", direct)
}
