// Package deploy checks lb's deployment files: the Kubernetes manifests (decoded strictly
// into the real API types), the container image, the systemd unit and the release build.
// It is a module of its own so that lb's module does not carry the Kubernetes API.
package deploy
