package server

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/daemonlet/daemonlet/api"
)

// Well-known user names and groups, as in Kubernetes.
const (
	// GroupMasters is the group whose members may do everything.
	GroupMasters = "system:masters"
	// GroupNodes is the group of node agents' users.
	GroupNodes = "system:nodes"
	// NodeUserPrefix prefixes a node agent's user name: system:node:<node>.
	NodeUserPrefix = "system:node:"
	// anonymousAdmin is the user every request runs as when authentication
	// is off.
	anonymousAdmin = "admin"
)

// UserInfo is an authenticated user: name, uid and groups, as in a
// kube-apiserver token file line.
type UserInfo struct {
	Name   string
	UID    string
	Groups []string
}

// TokenAuthenticator maps bearer tokens to users, loaded from a
// kube-apiserver style token file.
type TokenAuthenticator struct {
	tokens map[string]UserInfo
}

// ParseTokenFile reads a kube-apiserver --token-auth-file: CSV lines of
// token,user,uid[,"group1,group2"]; blank lines and lines starting with #
// are skipped. Errors name the line. It does no I/O beyond reading r, so it
// can be fuzzed.
func ParseTokenFile(r io.Reader) (*TokenAuthenticator, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	a := &TokenAuthenticator{tokens: map[string]UserInfo{}}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return a, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("token file line %d: %v: %w", pe.StartLine, pe.Err, errdefs.ErrInvalidArgument)
			}
			return nil, fmt.Errorf("token file: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) < 3 || len(rec) > 4 {
			return nil, fmt.Errorf("token file line %d: want 3 or 4 columns (token, user name, user uid, optional groups), found %d: %w",
				line, len(rec), errdefs.ErrInvalidArgument)
		}
		token, name := strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1])
		switch {
		case token == "":
			return nil, fmt.Errorf("token file line %d: the token is empty: %w", line, errdefs.ErrInvalidArgument)
		case name == "":
			return nil, fmt.Errorf("token file line %d: the user name is empty: %w", line, errdefs.ErrInvalidArgument)
		}
		if _, dup := a.tokens[token]; dup {
			return nil, fmt.Errorf("token file line %d: the token of user %q is a duplicate: %w", line, name, errdefs.ErrInvalidArgument)
		}
		u := UserInfo{Name: name, UID: strings.TrimSpace(rec[2])}
		if len(rec) == 4 {
			for g := range strings.SplitSeq(rec[3], ",") {
				if g = strings.TrimSpace(g); g != "" {
					u.Groups = append(u.Groups, g)
				}
			}
		}
		a.tokens[token] = u
	}
}

// Authenticate returns the user a bearer token belongs to.
func (a *TokenAuthenticator) Authenticate(token string) (UserInfo, bool) {
	u, ok := a.tokens[token]
	return u, ok
}

type userKey struct{}

func withUser(ctx context.Context, u UserInfo) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

func userFrom(ctx context.Context) UserInfo {
	u, _ := ctx.Value(userKey{}).(UserInfo)
	return u
}

// publicPaths answer without authentication, as kube-apiserver's
// system:public-info-viewer role allows.
var publicPaths = map[string]bool{"/version": true, "/healthz": true, "/readyz": true, "/livez": true}

// authenticate resolves the request's user; with authentication off every
// request is the admin. A token that is present but unknown is refused even
// on public paths, as kube-apiserver does.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Tokens == nil {
			next.ServeHTTP(w, r.WithContext(withUser(r.Context(), UserInfo{Name: anonymousAdmin, Groups: []string{GroupMasters}})))
			return
		}
		token, hasToken := bearerToken(r)
		if !hasToken {
			if publicPaths[r.URL.Path] {
				next.ServeHTTP(w, r)
				return
			}
			writeError(w, apierrors.NewUnauthorized("Unauthorized"))
			return
		}
		u, ok := s.cfg.Tokens.Authenticate(token)
		if !ok {
			writeError(w, apierrors.NewUnauthorized("Unauthorized"))
			return
		}
		next.ServeHTTP(w, r.WithContext(withUser(r.Context(), u)))
	})
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// requireUser refuses requests without an authenticated user (discovery is
// for any authenticated user, not for anonymous ones).
func requireUser(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if userFrom(r.Context()).Name == "" {
			writeError(w, apierrors.NewUnauthorized("Unauthorized"))
			return
		}
		next(w, r)
	}
}

// attributes describe a request for authorization.
type attributes struct {
	verb        string // get, list, watch, create, update, delete
	res         *resource
	subresource string
	namespace   string
	name        string
	fields      fields.Selector // list and watch only
	// usedOnNode, for ConfigMaps and Secrets, says whether namespace/name
	// is used on the node (Server.usedOnNode); nil for other resources.
	usedOnNode func(node, namespace, name string) bool
}

// objectCheck is a further condition on the objects a request reads or
// writes (a node may only touch pods bound to itself); nil means none.
type objectCheck func(object) bool

// authorize applies the contract's matrix: system:masters may do anything;
// a node user (system:node:<n> in system:nodes) gets NodeRestriction's
// rights; everybody else is forbidden. The returned check must hold for the
// stored object and the request's body.
func authorize(u UserInfo, a attributes) (objectCheck, error) {
	if slices.Contains(u.Groups, GroupMasters) {
		return nil, nil
	}
	node, isNode := strings.CutPrefix(u.Name, NodeUserPrefix)
	if !isNode || node == "" || !slices.Contains(u.Groups, GroupNodes) {
		return nil, forbidden(u, a)
	}
	fieldIs := func(name string) bool {
		if a.fields == nil {
			return false
		}
		v, ok := a.fields.RequiresExactMatch(name)
		return ok && v == node
	}
	switch a.res.name {
	case "daemonsets", "controllerrevisions":
		// An agent reads the templates of the revisions pinned on its
		// node; they are no more secret than the DaemonSets.
		if a.verb == "get" || a.verb == "list" || a.verb == "watch" {
			return nil, nil
		}
	case "events":
		// A node may report events about its own Node only: events about
		// pods would need a read of each pod to check its binding, and
		// agents report pod trouble in pod status.
		if a.verb == "create" {
			return func(o object) bool {
				e, ok := o.(*corev1.Event)
				return ok && e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node
			}, nil
		}
	case "nodes":
		switch a.verb {
		case "create":
			return func(o object) bool { return o.GetName() == node }, nil
		case "get", "update":
			if a.name == node {
				return nil, nil
			}
		case "list", "watch":
			if fieldIs("metadata.name") {
				return nil, nil
			}
		}
	case "configmaps", "secrets":
		// A node reads only what a DaemonSet running on it uses: one
		// object by name, or a list or watch narrowed to one name in its
		// namespace. It never writes them.
		if a.usedOnNode == nil || a.namespace == "" {
			break
		}
		switch a.verb {
		case "get":
			if a.usedOnNode(node, a.namespace, a.name) {
				return nil, nil
			}
		case "list", "watch":
			if a.fields != nil {
				if name, ok := a.fields.RequiresExactMatch("metadata.name"); ok && a.usedOnNode(node, a.namespace, name) {
					return nil, nil
				}
			}
		}
	case "pods":
		switch a.verb {
		case "create", "update", "delete", "get":
			return func(o object) bool { return podNodeName(o) == node }, nil
		case "list", "watch":
			if fieldIs("spec.nodeName") {
				return nil, nil
			}
		}
	}
	return nil, forbidden(u, a)
}

// forbidden is kube-apiserver's 403 with its RBAC message shape.
func forbidden(u UserInfo, a attributes) error {
	scope := " at the cluster scope"
	if a.namespace != "" {
		scope = fmt.Sprintf(" in the namespace %q", a.namespace)
	}
	resource := a.res.name
	if a.subresource != "" {
		resource += "/" + a.subresource
	}
	return apierrors.NewForbidden(a.res.groupResource(), a.name,
		fmt.Errorf("User %q cannot %s resource %q in API group %q%s", u.Name, a.verb, resource, a.res.group, scope))
}

// usedOnNode says whether the ConfigMap or Secret (res) namespace/name is
// referenced (api.ReferencedObjects) by a DaemonSet that runs on the node,
// as Kubernetes' node authorizer allows a kubelet to read only what its
// pods use. Pod objects do not count: a node writes its own pods, so a pod
// it made up could otherwise name any Secret (Kubernetes refuses mirror
// pods that reference Secrets for the same reason); an orphaned pod keeps
// the objects its agent cached. A store failure answers false, so that it
// denies rather than leaks.
func (s *Server) usedOnNode(ctx context.Context, res *resource, node, namespace, name string) bool {
	uses := func(spec *corev1.PodSpec) bool {
		cms, secrets := api.ReferencedObjects(spec)
		if res == s.configMaps {
			return slices.Contains(cms, name)
		}
		return slices.Contains(secrets, name)
	}
	if kv, err := s.store.Get(ctx, s.nodes.key("", node)); err == nil {
		if o, err := s.nodes.decode(kv); err == nil {
			n := o.(*corev1.Node)
			sets, _, err := s.list(ctx, s.daemonSets, namespace, nil)
			if err != nil {
				s.log.Warn("authorizing a node: listing daemonsets", "node", node, "error", err)
			}
			for _, o := range sets {
				ds := o.(*appsv1.DaemonSet)
				if _, runs := api.NodeShouldRunDaemonPod(n, ds); runs && uses(&ds.Spec.Template.Spec) {
					return true
				}
			}
		}
	} else if !errdefs.IsNotFound(err) {
		s.log.Warn("authorizing a node: reading its node", "node", node, "error", err)
	}
	return false
}
