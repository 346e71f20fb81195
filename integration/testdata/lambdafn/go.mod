module github.com/caddy-targetgroup/caddy-targetgroup/integration/testdata/lambdafn

go 1.26

require github.com/aws/aws-lambda-go v1.55.1
