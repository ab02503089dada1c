// Command testimage is the one program of daemonlet's test image: its
// arguments are a script of actions, run left to right, so that one static
// binary can play every container a test needs.
//
// Grammar (each action is a word followed by its fixed arguments):
//
//	sleep                      block forever (until a signal ends the program)
//	pause DURATION             block for DURATION (Go syntax: 500ms, 2s, 1m)
//	exit N [after DURATION]    exit with code N, optionally after DURATION
//	ignore-sigterm             from now on, log SIGTERM and keep running
//	on-sigterm N [after DURATION]
//	                           from now on, exit with N (after DURATION) on SIGTERM
//	serve-http PORT            serve HTTP on 0.0.0.0:PORT in the background:
//	                           GET / answers 200 "ok", /env the environment,
//	                           /status/N answers status N
//	print-env                  print the environment, one VAR=value a line
//	print LINE                 print LINE to stdout
//	eprint LINE                print LINE to stderr
//	print-id                   print "uid=U gid=G groups=A,B"
//	print-hostname             print "hostname=H"
//	cat PATH                   print the contents of the file PATH
//	write-file PATH CONTENT    write CONTENT to the file PATH (mode 0644)
//	alloc-mem MiB              allocate MiB mebibytes and touch every page,
//	                           holding them until the program ends
//	get URL                    HTTP GET URL (5s timeout) and print
//	                           "get URL: STATUS BODY"; an unreachable URL or a
//	                           status other than 2xx is an error
//	chown PATH UID             change the owner of PATH to UID (group kept)
//	mount-tmpfs PATH           create the directory PATH and mount a tmpfs on it
//
// Without arguments the program runs "sleep". By default SIGTERM and SIGINT
// end the program with code 0, as a well-behaved daemon would. When the
// script runs out, the program exits 0, unless it is serving HTTP or holding
// memory, in which case it sleeps so that what it holds stays observable.
//
// Every action except print, eprint, print-env, print-id, print-hostname,
// cat and get (whose output is their own record) first logs "testimage: <what>" to
// stdout, so that tests can follow the script in the container's log.
// A malformed script is reported on stderr and ends the program with code 2.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// termPolicy is what a SIGTERM does; the script changes it as it runs.
type termPolicy struct {
	mu     sync.Mutex
	ignore bool
	code   int
	delay  time.Duration
}

var (
	term termPolicy
	// held keeps alloc-mem's memory reachable so the collector cannot free it.
	held [][]byte
	// serving is true once serve-http has started a listener.
	serving bool
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"sleep"}
	}
	watchSignals()
	if err := run(args); err != nil {
		fmt.Fprintf(os.Stderr, "testimage: %v\n", err)
		os.Exit(2)
	}
	if serving || len(held) > 0 {
		logf("script done, holding on")
		select {}
	}
	logf("script done, exit 0")
	os.Exit(0)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stdout, "testimage: "+format+"\n", a...)
}

// watchSignals applies the current termPolicy to every SIGTERM and SIGINT.
func watchSignals() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range ch {
			name := "SIGTERM"
			if sig == syscall.SIGINT {
				name = "SIGINT"
			}
			term.mu.Lock()
			ignore, code, delay := term.ignore, term.code, term.delay
			term.mu.Unlock()
			if ignore {
				logf("got %s, ignoring it", name)
				continue
			}
			logf("got %s, exit %d after %v", name, code, delay)
			time.Sleep(delay)
			os.Exit(code)
		}
	}()
}

// script walks the argument list.
type script struct {
	args []string
	pos  int
}

func (s *script) next(what string) (string, error) {
	if s.pos >= len(s.args) {
		return "", fmt.Errorf("%s: missing argument", what)
	}
	v := s.args[s.pos]
	s.pos++
	return v, nil
}

func (s *script) int(what string) (int, error) {
	v, err := s.next(what)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not an integer", what, v)
	}
	return n, nil
}

// optionalAfter reads "after DURATION" if it comes next.
func (s *script) optionalAfter(what string) (time.Duration, error) {
	if s.pos >= len(s.args) || s.args[s.pos] != "after" {
		return 0, nil
	}
	s.pos++
	return s.duration(what + " after")
}

func (s *script) duration(what string) (time.Duration, error) {
	v, err := s.next(what)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration", what, v)
	}
	return d, nil
}

func run(args []string) error {
	s := &script{args: args}
	for s.pos < len(s.args) {
		word := s.args[s.pos]
		s.pos++
		if err := step(s, word); err != nil {
			return err
		}
	}
	return nil
}

// step runs one action whose arguments follow in s.
func step(s *script, word string) error {
	switch word {
	case "sleep":
		logf("sleep forever")
		select {}
	case "pause":
		d, err := s.duration(word)
		if err != nil {
			return err
		}
		logf("pause %v", d)
		time.Sleep(d)
	case "exit":
		code, err := s.int(word)
		if err != nil {
			return err
		}
		d, err := s.optionalAfter(word)
		if err != nil {
			return err
		}
		logf("exit %d after %v", code, d)
		time.Sleep(d)
		os.Exit(code)
	case "ignore-sigterm":
		logf("ignore SIGTERM")
		term.mu.Lock()
		term.ignore = true
		term.mu.Unlock()
	case "on-sigterm":
		code, err := s.int(word)
		if err != nil {
			return err
		}
		d, err := s.optionalAfter(word)
		if err != nil {
			return err
		}
		logf("on SIGTERM exit %d after %v", code, d)
		term.mu.Lock()
		term.ignore, term.code, term.delay = false, code, d
		term.mu.Unlock()
	case "serve-http":
		port, err := s.int(word)
		if err != nil {
			return err
		}
		return serveHTTP(port)
	case "print-env":
		env := os.Environ()
		sort.Strings(env)
		for _, kv := range env {
			fmt.Println(kv)
		}
	case "print":
		line, err := s.next(word)
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stdout, line)
	case "eprint":
		line, err := s.next(word)
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, line)
	case "print-id":
		groups, err := syscall.Getgroups()
		if err != nil {
			return fmt.Errorf("print-id: %w", err)
		}
		gs := make([]string, len(groups))
		for i, g := range groups {
			gs[i] = strconv.Itoa(g)
		}
		fmt.Printf("uid=%d gid=%d groups=%s\n", os.Getuid(), os.Getgid(), strings.Join(gs, ","))
	case "print-hostname":
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("print-hostname: %w", err)
		}
		fmt.Printf("hostname=%s\n", h)
	case "cat":
		path, err := s.next(word)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("cat: %w", err)
		}
		// A trailing newline keeps the next log line from joining this one.
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		if _, err := os.Stdout.Write(b); err != nil {
			return fmt.Errorf("cat: %w", err)
		}
	case "write-file":
		path, err := s.next(word)
		if err != nil {
			return err
		}
		content, err := s.next(word)
		if err != nil {
			return err
		}
		logf("write-file %s", path)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write-file: %w", err)
		}
	case "alloc-mem":
		mib, err := s.int(word)
		if err != nil {
			return err
		}
		logf("alloc-mem %d MiB", mib)
		b := make([]byte, mib<<20)
		// Writing one byte a page makes the kernel back (and charge) it.
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		held = append(held, b)
		logf("alloc-mem %d MiB done", mib)
	case "get":
		url, err := s.next(word)
		if err != nil {
			return err
		}
		return get(url)
	case "chown":
		path, err := s.next(word)
		if err != nil {
			return err
		}
		uid, err := s.int(word)
		if err != nil {
			return err
		}
		logf("chown %s %d", path, uid)
		if err := os.Chown(path, uid, -1); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	case "mount-tmpfs":
		path, err := s.next(word)
		if err != nil {
			return err
		}
		logf("mount-tmpfs %s", path)
		if err := os.MkdirAll(path, 0o755); err != nil {
			return fmt.Errorf("mount-tmpfs: %w", err)
		}
		if err := syscall.Mount("tmpfs", path, "tmpfs", 0, ""); err != nil {
			return fmt.Errorf("mount-tmpfs %s: %w", path, err)
		}
	default:
		return fmt.Errorf("unknown action %q (at argument %d)", word, s.pos)
	}
	return nil
}

// get fetches url and prints its status and body on one line, so that a
// test can tell from the log that one container reached another.
func get(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	fmt.Printf("get %s: %d %s\n", url, resp.StatusCode, strings.TrimSpace(string(body)))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("get %s: status %d", url, resp.StatusCode)
	}
	return nil
}

func serveHTTP(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return fmt.Errorf("serve-http: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, _ *http.Request) {
		env := os.Environ()
		sort.Strings(env)
		fmt.Fprintln(w, strings.Join(env, "\n"))
	})
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 100 || code > 999 {
			http.Error(w, "bad status code", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
	})
	logf("serve-http on %s", ln.Addr())
	serving = true
	go func() {
		err := http.Serve(ln, mux)
		fmt.Fprintf(os.Stderr, "testimage: serve-http: %v\n", err)
		os.Exit(2)
	}()
	return nil
}
