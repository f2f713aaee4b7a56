// Package metricstest scrapes a Prometheus endpoint over HTTP and returns its samples as a
// map, for tests that assert exact counts.
package metricstest

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Values maps a sample's Key to its value. A histogram gives name_bucket{...,le="..."},
// name_sum and name_count samples, as in the text format.
type Values map[string]float64

// Key names a sample: the metric name, then its labels as name="value" pairs sorted by
// name, in braces; just the name when it has no labels. Give labels as name, value pairs:
// Key("lb_backend_up", "backend", "web-1") is `lb_backend_up{backend="web-1"}`.
func Key(name string, labels ...string) string {
	if len(labels)%2 != 0 {
		panic("metricstest.Key: labels come in name, value pairs")
	}
	if len(labels) == 0 {
		return name
	}
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+strconv.Quote(labels[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// Scrape GETs url (a /metrics endpoint) with a real HTTP client, parses the text format with
// expfmt and returns every sample. A status other than 200 or a body that does not parse is
// an error.
func Scrape(ctx context.Context, url string) (Values, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", url, err)
	}
	return flatten(families), nil
}

func flatten(families map[string]*dto.MetricFamily) Values {
	v := Values{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName(), l.GetValue())
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				v[Key(name, labels...)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v[Key(name, labels...)] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					le := strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)
					v[Key(name+"_bucket", append(labels, "le", le)...)] = float64(b.GetCumulativeCount())
				}
				v[Key(name+"_bucket", append(labels, "le", "+Inf")...)] = float64(h.GetSampleCount())
				v[Key(name+"_sum", labels...)] = h.GetSampleSum()
				v[Key(name+"_count", labels...)] = float64(h.GetSampleCount())
			default:
				v[Key(name, labels...)] = m.GetUntyped().GetValue()
			}
		}
	}
	return v
}

// Wait scrapes url every 20ms until ok accepts the samples, and returns them; at ctx's end
// it returns the last samples with an error that shows them. Counters that l4 adds when a
// connection closes lag the client's view of the close: wait for them, do not sleep.
func Wait(ctx context.Context, url string, ok func(Values) bool) (Values, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last Values
	var lastErr error
	for {
		v, err := Scrape(ctx, url)
		if err == nil && ok(v) {
			return v, nil
		}
		if err == nil {
			last = v
		}
		lastErr = err
		select {
		case <-ctx.Done():
			if lastErr != nil && last == nil {
				return nil, lastErr
			}
			return last, fmt.Errorf("%s: condition not met before %v; last lb_* samples:\n%s", url, ctx.Err(), last.lb())
		case <-tick.C:
		}
	}
}

// lb returns the lb_* samples, sorted, one a line, for failure messages.
func (v Values) lb() string {
	var lines []string
	for k, x := range v {
		if strings.HasPrefix(k, "lb_") && !strings.Contains(k, "_bucket") {
			lines = append(lines, k+" "+strconv.FormatFloat(x, 'g', -1, 64))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
