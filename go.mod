module github.com/erlmcp/migctl

go 1.26.8

require (
	github.com/ergo-services/ergo v1.999.224
	github.com/stretchr/testify v1.12.1
)

require (
	go.etcd.io/bbolt v1.5.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/term v0.48.0 // indirect
)
