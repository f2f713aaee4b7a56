package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"lb/serversfile"
)

const k8sDir = "kubernetes"

// kustomization is the part of kustomize's Kustomization these manifests use; decoding is
// strict, so a field outside it fails the test rather than being ignored.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// manifests holds every object of the kustomization's resources, decoded into its API type.
type manifests struct {
	kust         kustomization
	deployments  map[string]*appsv1.Deployment
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	namespaces   map[string]*corev1.Namespace
	disruptions  map[string]*policyv1.PodDisruptionBudget
	objectsCount int
}

// loadManifests decodes kustomization.yaml and every document of every resource it lists
// with sigs.k8s.io/yaml's UnmarshalStrict into the k8s.io/api type of its kind: an unknown
// field, a duplicate field, a wrong type or an unknown kind fails the test.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		namespaces: map[string]*corev1.Namespace{}, disruptions: map[string]*policyv1.PodDisruptionBudget{},
	}
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.kust.Kind != "Kustomization" || m.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Fatalf("kustomization.yaml: kind %q apiVersion %q", m.kust.Kind, m.kust.APIVersion)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(m.kust.Resources, base) {
			t.Errorf("%s is not in kustomization.yaml's resources: kubectl apply -k would leave it out", f)
		}
	}
	for _, res := range m.kust.Resources {
		data, err := os.ReadFile(filepath.Join(k8sDir, res))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", res, err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			m.decode(t, res, i, doc)
		}
	}
	return m
}

func (m *manifests) decode(t *testing.T, file string, i int, doc []byte) {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		t.Fatalf("%s, document %d: %v", file, i+1, err)
	}
	var obj any
	var name func() string
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		obj, name = o, func() string { m.deployments[o.Name] = o; return o.Name }
	case "v1 Service":
		o := &corev1.Service{}
		obj, name = o, func() string { m.services[o.Name] = o; return o.Name }
	case "v1 ConfigMap":
		o := &corev1.ConfigMap{}
		obj, name = o, func() string { m.configMaps[o.Name] = o; return o.Name }
	case "v1 Secret":
		o := &corev1.Secret{}
		obj, name = o, func() string { m.secrets[o.Name] = o; return o.Name }
	case "v1 Namespace":
		o := &corev1.Namespace{}
		obj, name = o, func() string { m.namespaces[o.Name] = o; return o.Name }
	case "policy/v1 PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		obj, name = o, func() string { m.disruptions[o.Name] = o; return o.Name }
	default:
		t.Fatalf("%s, document %d: kind %q of %q: add its type to this test", file, i+1, head.Kind, head.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%s, document %d (%s): %v", file, i+1, head.Kind, err)
	}
	if name() == "" {
		t.Errorf("%s, document %d (%s): no metadata.name", file, i+1, head.Kind)
	}
	m.objectsCount++
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	if m.objectsCount < 9 {
		t.Fatalf("decoded %d objects; want the namespace, secret, configmap, redis and lb deployments and services, the PDB and the backends' service", m.objectsCount)
	}
	// The strict decoder is only worth its name if it refuses a misspelt field.
	bad := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 3}\n")
	if err := yaml.UnmarshalStrict(bad, &appsv1.Deployment{}); err == nil {
		t.Fatal("UnmarshalStrict took spec.replica (for replicas): the manifests are not really checked")
	}
}

// lbContainer returns the lb Deployment and its lb container.
func lbContainer(t *testing.T, m *manifests) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	d := m.deployments["lb"]
	if d == nil {
		t.Fatal("no Deployment named lb")
	}
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "lb" {
			return d, c
		}
	}
	t.Fatal("Deployment lb has no container named lb")
	return nil, nil
}

// arg returns the value of --name=value in args, or "" and false.
func arg(args []string, name string) (string, bool) {
	for _, a := range args {
		if a == "--"+name {
			return "", true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestLBDeployment(t *testing.T) {
	m := loadManifests(t)
	d, c := lbContainer(t, m)
	pod := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("lb replicas: %v, want 3", d.Spec.Replicas)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("lb args %v: want serve first (the image's entrypoint is /lb)", c.Args)
	}
	admin := map[string]int32{}
	for _, p := range c.Ports {
		admin[p.Name] = p.ContainerPort
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}}
	for _, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe: %+v, want GET %s on the metrics port (no token there)", p.name, p.probe, p.path)
		}
	}
	if listen, _ := arg(c.Args, "metrics-listen"); listen != ":9100" || admin["metrics"] != 9100 {
		t.Errorf("--metrics-listen %q and the metrics port %d disagree; want :9100 and 9100", listen, admin["metrics"])
	}
	if listen, _ := arg(c.Args, "admin-listen"); listen != ":9090" || admin["admin"] != 9090 {
		t.Errorf("--admin-listen %q and the admin port %d disagree; want :9090 and 9090", listen, admin["admin"])
	}
	if listen, _ := arg(c.Args, "listen"); listen != ":7777" || admin["http"] != 7777 {
		t.Errorf("--listen %q and the http port %d disagree; want :7777 and 7777", listen, admin["http"])
	}
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9100" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("prometheus annotations %v: want scrape true, port 9100 (the metrics listener, which needs no token), path /metrics", ann)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("lb resource requests %v: want cpu and memory", c.Resources.Requests)
	}
	sc := c.SecurityContext
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("lb security: pod %+v, container %+v; want non-root, read-only root, no privilege escalation", pod.SecurityContext, sc)
	}

	// SIGTERM comes after preStop; the drain must end before the grace period does.
	drain := 10 * time.Second // lb's default
	if v, ok := arg(c.Args, "drain-timeout"); ok {
		var err error
		if drain, err = time.ParseDuration(v); err != nil {
			t.Fatalf("--drain-timeout=%s: %v", v, err)
		}
	}
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Error("lb has no preStop sleep: the Service may still send connections after SIGTERM stopped accepting")
	} else {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= preStop+drain {
		t.Errorf("terminationGracePeriodSeconds %v <= preStop %v + --drain-timeout %v: the drain is cut by SIGKILL", grace, preStop, drain)
	}

	// The secret's keys feed the session secret and the admin token.
	env := map[string]*corev1.EnvVarSource{}
	for _, e := range c.Env {
		env[e.Name] = e.ValueFrom
	}
	for _, name := range []string{"LB_SESSION_SECRET", "LB_ADMIN_TOKEN"} {
		src := env[name]
		if src == nil || src.SecretKeyRef == nil {
			t.Errorf("%s does not come from a Secret", name)
			continue
		}
		s := m.secrets[src.SecretKeyRef.Name]
		if s == nil || s.StringData[src.SecretKeyRef.Key] == "" && len(s.Data[src.SecretKeyRef.Key]) == 0 {
			t.Errorf("%s: Secret %s has no key %s", name, src.SecretKeyRef.Name, src.SecretKeyRef.Key)
		}
	}

	// Sessions go to the Redis Service of the manifests.
	store, _ := arg(c.Args, "session-store")
	if r := m.services["redis"]; r == nil || m.deployments["redis"] == nil || store != "redis://redis:6379/0" {
		t.Errorf("--session-store %q: want redis://redis:6379/0, served by a redis Deployment and Service", store)
	}
	if svc := m.services["lb"]; svc == nil || svc.Spec.Selector["app"] != "lb" || d.Spec.Template.Labels["app"] != "lb" {
		t.Error("the lb Service does not select the lb pods")
	}
}

// The servers file in the ConfigMap is mounted where --servers reads it, watched, and finds
// the pods of the headless backends Service by its full name in the kustomization's namespace.
func TestServersConfigMap(t *testing.T) {
	m := loadManifests(t)
	d, c := lbContainer(t, m)
	servers, _ := arg(c.Args, "servers")
	if _, watch := arg(c.Args, "watch"); !watch {
		t.Error("lb runs without --watch: edits of the ConfigMap would need a restart")
	}
	var mountDir, cmName string
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(servers) == vm.MountPath && vm.SubPath == "" {
			mountDir = vm.MountPath
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == vm.Name && v.ConfigMap != nil {
					cmName = v.ConfigMap.Name
				}
			}
		}
	}
	cm := m.configMaps[cmName]
	if mountDir == "" || cm == nil {
		t.Fatalf("--servers=%s is not in a ConfigMap mounted as a directory (a subPath mount never sees edits)", servers)
	}
	text, ok := cm.Data[filepath.Base(servers)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cmName, filepath.Base(servers))
	}
	f, err := serversfile.ParseFile(cmName+"/"+filepath.Base(servers), strings.NewReader(text))
	if err != nil {
		t.Fatalf("the servers file in the ConfigMap: %v", err)
	}
	if len(f.Discover) != 1 || f.Discover[0].Mode != "a" {
		t.Fatalf("servers file: %+v; want one discover=a line", f)
	}
	var headless []string
	for name, svc := range m.services {
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			for _, p := range svc.Spec.Ports {
				headless = append(headless, name+"."+m.kust.Namespace+".svc.cluster.local:"+p.TargetPort.String())
			}
		}
	}
	// Pod addresses are dialled at the pods' port: the Service's targetPort.
	got := f.Discover[0].Name + ":" + strconv.Itoa(f.Discover[0].Port)
	if !slices.Contains(headless, got) {
		t.Errorf("discover=a line %s names no headless Service of the manifests (%v)", got, headless)
	}
}

func TestManifestFlagsExist(t *testing.T) {
	m := loadManifests(t)
	_, c := lbContainer(t, m)
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name)
	}
	checkFlags(t, "deploy/kubernetes/lb.yaml", c.Args, env)
}
