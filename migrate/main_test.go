package migrate

import (
	"os"
	"testing"

	"github.com/erlmcp/migctl/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }
