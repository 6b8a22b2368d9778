package benchkit

import (
	"os"
	"testing"

	"github.com/erlmcp/migctl/testkit"
)

// TestMain: the package's benches run against real nodes (testkit).
func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }
