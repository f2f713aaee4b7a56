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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Values maps a sample's Key to its value. A histogram gives name_bucket{...,le="..."},
// name_sum and name_count samples, as in the text format.
type Values map[string]float64

// Key names a sample: the metric name, then its labels as name="value" pairs sorted by
// name, in braces; just the name when it has no labels. Give labels as name, value pairs:
// Key("lb_connections_total", "backend", "web-1") is `lb_connections_total{backend="web-1"}`.
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
