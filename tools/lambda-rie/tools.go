//go:build tools

// Package tools pins the AWS Lambda Runtime Interface Emulator that the
// lambda tests run functions in: it has no tagged release, only this
// pseudo-version.
package tools

import _ "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
