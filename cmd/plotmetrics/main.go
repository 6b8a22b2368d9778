// Command plotmetrics draws the panels of migctl's Grafana dashboard from
// Prometheus range queries into one PNG, for the docs and for anyone without
// Grafana.
//
// Input is either a live Prometheus (it runs the queries itself):
//
//	go run ./cmd/plotmetrics -prometheus http://127.0.0.1:9090 -since 2h -out dashboard.png
//	go run ./cmd/plotmetrics -prometheus URL -since 2h -save data.json -out dashboard.png
//
// or a recorded file (what -save writes; docs/img/dashboard-data.json):
//
//	go run ./cmd/plotmetrics -in docs/img/dashboard-data.json -out docs/img/dashboard.png
//
// The file holds, per panel key, the query and the untouched JSON answer of
// Prometheus's /api/v1/query_range. Panels: migration phase per node
// (migctl_node_migration_phase), differences per check by kind and sessions
// compared (migctl_consistency_*), backfill progress and rate
// (migctl_backfill_*), and the Mnesia cluster's partition state
// and islands (migctl_mnesia_*). A panel whose series are absent is drawn
// with a note saying so.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Queries are the dashboard's panels' queries, by key.
var Queries = map[string]string{
	"phase":       `migctl_node_migration_phase == 1`,
	"mismatches":  `migctl_consistency_last_check_mismatches`,
	"compared":    `migctl_consistency_last_check_sessions_compared`,
	"checks":      `migctl_consistency_checks_total`,
	"partitioned": `migctl_mnesia_partitioned`,
	"islands":     `migctl_mnesia_islands`,
	"degraded":    `migctl_mnesia_degraded`,
	"reachable":   `migctl_mnesia_node_reachable`,
	"backfill":    `migctl_backfill_progress_ratio`,
	// The dashboard uses [1m] for a 15 s scrape; recordings scrape every 2 s.
	"backfillrate": `sum by (direction) (rate(migctl_backfill_scanned_sessions_total[10s]))`,
}

// Data is the recorded file.
type Data struct {
	Source  string           `json:"source,omitempty"`
	Queries map[string]Query `json:"queries"`
}

// Query is one query and Prometheus's answer to it.
type Query struct {
	Query    string   `json:"query"`
	Response Response `json:"response"`
}

// Response is the body of /api/v1/query_range.
type Response struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	Data   struct {
		ResultType string   `json:"resultType"`
		Result     []Series `json:"result"`
	} `json:"data"`
}

// Series is one matrix series.
type Series struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values"`
}

func main() {
	in := flag.String("in", "", "recorded query_range answers (JSON, as -save writes)")
	prom := flag.String("prometheus", "", "Prometheus base URL to query instead of -in")
	since := flag.Duration("since", time.Hour, "with -prometheus: how far back")
	step := flag.Duration("step", 5*time.Second, "with -prometheus: resolution")
	save := flag.String("save", "", "with -prometheus: also write the answers here")
	out := flag.String("out", "dashboard.png", "PNG to write")
	flag.Parse()
	if err := run(*in, *prom, *since, *step, *save, *out); err != nil {
		fmt.Fprintln(os.Stderr, "plotmetrics:", err)
		os.Exit(1)
	}
}

func run(in, prom string, since, step time.Duration, save, out string) error {
	var d *Data
	var err error
	switch {
	case in != "" && prom != "":
		return errors.New("give -in or -prometheus, not both")
	case in != "":
		d, err = load(in)
	case prom != "":
		end := time.Now()
		d, err = fetch(prom, end.Add(-since), end, step)
		if err == nil && save != "" {
			var b []byte
			b, err = json.Marshal(d)
			if err == nil {
				err = os.WriteFile(save, b, 0o644)
			}
		}
	default:
		return errors.New("give -in FILE or -prometheus URL")
	}
	if err != nil {
		return err
	}
	return render(d, out)
}

func load(path string) (*Data, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Data
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}

func fetch(base string, start, end time.Time, step time.Duration) (*Data, error) {
	d := &Data{Source: fmt.Sprintf("%s %s..%s step %s", base, start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), step),
		Queries: map[string]Query{}}
	for k, q := range Queries {
		v := url.Values{}
		v.Set("query", q)
		v.Set("start", strconv.FormatInt(start.Unix(), 10))
		v.Set("end", strconv.FormatInt(end.Unix(), 10))
		v.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
		resp, err := http.Get(strings.TrimRight(base, "/") + "/api/v1/query_range?" + v.Encode())
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		var r Response
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", q, resp.Status, err)
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("%s: %s", q, r.Error)
		}
		d.Queries[k] = Query{Query: q, Response: r}
	}
	return d, nil
}

// points turns a series into plot points (time as Unix seconds).
func points(s Series) (plotter.XYs, error) {
	var xy plotter.XYs
	for _, v := range s.Values {
		t, ok := v[0].(float64)
		if !ok {
			return nil, fmt.Errorf("time %v is not a number", v[0])
		}
		str, ok := v[1].(string)
		if !ok {
			return nil, fmt.Errorf("value %v is not a string", v[1])
		}
		y, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, err
		}
		xy = append(xy, plotter.XY{X: t, Y: y})
	}
	return xy, nil
}

// timeRange is the span of every series in d.
func timeRange(d *Data) (lo, hi float64) {
	first := true
	for _, q := range d.Queries {
		for _, s := range q.Response.Data.Result {
			for _, v := range s.Values {
				t, _ := v[0].(float64)
				if first || t < lo {
					lo = t
				}
				if first || t > hi {
					hi = t
				}
				first = false
			}
		}
	}
	return lo, hi
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

// panel is one plot of the grid.
type panel struct {
	title, ylabel string
	build         func(p *plot.Plot, d *Data) (int, error) // returns the number of series drawn
}

func newPlot(title, ylabel string, lo, hi float64) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Y.Label.Text = ylabel
	p.X.Min, p.X.Max = lo, hi
	// A recording of a few minutes has ticks less than a minute apart.
	format := "15:04"
	if hi-lo < 15*60 {
		format = "15:04:05"
	}
	p.X.Tick.Marker = plot.TimeTicks{Format: format, Time: plot.UnixTimeIn(time.UTC)}
	p.X.Label.Text = "UTC"
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())
	return p
}

// lines adds one line per series of key, named by label(metric).
func lines(p *plot.Plot, d *Data, key string, label func(map[string]string) string, colour0 int) (int, error) {
	q, ok := d.Queries[key]
	if !ok {
		return 0, nil
	}
	res := q.Response.Data.Result
	sort.Slice(res, func(i, j int) bool { return label(res[i].Metric) < label(res[j].Metric) })
	n := 0
	for _, s := range res {
		xy, err := points(s)
		if err != nil {
			return n, fmt.Errorf("%s: %w", key, err)
		}
		// A gap in the samples (the exporter was not running) stays a gap.
		for i, seg := range segments(xy) {
			l, err := plotter.NewLine(seg)
			if err != nil {
				return n, err
			}
			l.Color = palette[(colour0+n)%len(palette)]
			l.Width = vg.Points(2)
			l.StepStyle = plotter.PostStep
			p.Add(l)
			if i == 0 {
				p.Legend.Add(label(s.Metric), l)
			}
		}
		n++
	}
	return n, nil
}

// segments cuts xy where consecutive samples are more than three of its
// smallest steps apart.
func segments(xy plotter.XYs) []plotter.XYs {
	if len(xy) < 2 {
		return []plotter.XYs{xy}
	}
	step := 0.0
	for i := 1; i < len(xy); i++ {
		if d := xy[i].X - xy[i-1].X; d > 0 && (step == 0 || d < step) {
			step = d
		}
	}
	var out []plotter.XYs
	start := 0
	for i := 1; i < len(xy); i++ {
		if xy[i].X-xy[i-1].X > 3*step {
			out = append(out, xy[start:i])
			start = i
		}
	}
	return append(out, xy[start:])
}

// phaseNumber maps "phase2" to 2.
func phaseNumber(s string) float64 {
	n, err := strconv.Atoi(strings.TrimPrefix(s, "phase"))
	if err != nil {
		return -1
	}
	return float64(n)
}

var panels = []panel{
	{"Migration phase per node (migctl_node_migration_phase)", "phase", func(p *plot.Plot, d *Data) (int, error) {
		q, ok := d.Queries["phase"]
		if !ok {
			return 0, nil
		}
		// One line per node: the phase it reports (the series whose value is 1).
		byNode := map[string]plotter.XYs{}
		for _, s := range q.Response.Data.Result {
			xy, err := points(s)
			if err != nil {
				return 0, err
			}
			ph := phaseNumber(s.Metric["phase"])
			for _, pt := range xy {
				byNode[s.Metric["node"]] = append(byNode[s.Metric["node"]], plotter.XY{X: pt.X, Y: ph})
			}
		}
		var nodes []string
		for n := range byNode {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		for i, n := range nodes {
			xy := byNode[n]
			sort.Slice(xy, func(a, b int) bool { return xy[a].X < xy[b].X })
			// Nodes share a phase: offset them a little so every line shows.
			for k := range xy {
				xy[k].Y += float64(i) * 0.06
			}
			sc, err := plotter.NewScatter(xy)
			if err != nil {
				return i, err
			}
			sc.GlyphStyle.Color = palette[i%len(palette)]
			sc.GlyphStyle.Radius = vg.Points(2.2)
			sc.GlyphStyle.Shape = draw.CircleGlyph{}
			p.Add(sc)
			p.Legend.Add(n, sc)
		}
		p.Y.Min, p.Y.Max = -0.2, 3.6
		p.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 0, Label: "phase0"}, {Value: 1, Label: "phase1"}, {Value: 2, Label: "phase2"}, {Value: 3, Label: "phase3"}})
		return len(nodes), nil
	}},
	{"Differences in the last check, by kind (migctl_consistency_last_check_mismatches)", "sessions", func(p *plot.Plot, d *Data) (int, error) {
		return lines(p, d, "mismatches", func(m map[string]string) string { return m["kind"] }, 0)
	}},
	{"Sessions compared per check (migctl_consistency_last_check_sessions_compared)", "sessions", func(p *plot.Plot, d *Data) (int, error) {
		return lines(p, d, "compared", func(m map[string]string) string { return "compared" }, 0)
	}},
	{"Checks by result (migctl_consistency_checks_total)", "checks", func(p *plot.Plot, d *Data) (int, error) {
		return lines(p, d, "checks", func(m map[string]string) string { return m["result"] }, 0)
	}},
	{"Backfill progress (migctl_backfill_progress_ratio)", "of the sessions", func(p *plot.Plot, d *Data) (int, error) {
		n, err := lines(p, d, "backfill", func(m map[string]string) string { return m["direction"] }, 0)
		p.Y.Min, p.Y.Max = -0.05, 1.1
		return n, err
	}},
	{"Backfill rate, sessions/s (rate of migctl_backfill_scanned_sessions_total)", "sessions/s", func(p *plot.Plot, d *Data) (int, error) {
		return lines(p, d, "backfillrate", func(m map[string]string) string { return m["direction"] }, 0)
	}},
	{"Mnesia split brain (migctl_mnesia_partitioned, _islands, _degraded)", "value", func(p *plot.Plot, d *Data) (int, error) {
		n := 0
		for _, k := range []string{"partitioned", "islands", "degraded"} {
			m, err := lines(p, d, k, func(map[string]string) string { return "migctl_mnesia_" + k }, n)
			if err != nil {
				return n, err
			}
			n += m
		}
		p.Y.Min = -0.2
		p.Legend.Left = true // the split is on the right
		return n, nil
	}},
	{"Nodes reachable by the watch (migctl_mnesia_node_reachable)", "reachable", func(p *plot.Plot, d *Data) (int, error) {
		n, err := lines(p, d, "reachable", func(m map[string]string) string { return m["node"] }, 0)
		p.Y.Min, p.Y.Max = -0.2, 1.4
		return n, err
	}},
}

func render(d *Data, out string) error {
	lo, hi := timeRange(d)
	if hi <= lo {
		return errors.New("no samples in the data")
	}
	const cols = 2
	rows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i, pn := range panels {
		p := newPlot(pn.title, pn.ylabel, lo, hi)
		n, err := pn.build(p, d)
		if err != nil {
			return fmt.Errorf("%s: %w", pn.title, err)
		}
		if n == 0 {
			p.Title.Text += "\n(no series in the data)"
		}
		grid[i/cols] = append(grid[i/cols], p)
	}
	for len(grid[rows-1]) < cols {
		grid[rows-1] = append(grid[rows-1], nil)
	}
	const w, h = 16 * vg.Inch, 13 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	top := dc
	top.Max.Y -= vg.Points(28)
	title := "migctl: DETS -> Mnesia on a 3-node dev cluster, then a split brain and its heal (recorded by Prometheus)"
	tf := plot.DefaultFont
	tf.Size = vg.Points(18)
	dc.FillText(draw.TextStyle{Color: color.Black, Font: tf, Handler: plot.DefaultTextHandler, XAlign: draw.XCenter},
		vg.Point{X: w / 2, Y: h - vg.Points(20)}, title)
	t := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(grid, t, top)
	for r := range grid {
		for c, p := range grid[r] {
			if p != nil {
				p.Draw(canvases[r][c])
			}
		}
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	png := vgimg.PngCanvas{Canvas: img}
	if _, err := png.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
