// Package awsclients tests the AWS-compatible APIs of a built Caddy with the
// real AWS clients: the AWS SDK for Go v2 (ELBv2 and VPC Lattice), the AWS
// CLI (aws elbv2) and, where Node.js is present, the AWS SDK for
// JavaScript's VPC Lattice client. It is a module of its own so that the
// SDKs stay out of the plugin's dependencies; it imports nothing of the
// plugin and drives Caddy only through its admin endpoint and its sites.
//
// The tests run the Caddy that CADDY_BINARY names (make test builds one
// with the race detector), or ../../bin/caddy.
package awsclients
