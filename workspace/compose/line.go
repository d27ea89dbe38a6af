package compose

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v4"
)

// fileError is an error in a compose file, said with the line it is on: "compose file line 7:
// service "web": privileged: ...". Load finds the line from path (keys from the top of the
// file) after the fact, so the checks that refuse need not carry YAML nodes.
type fileError struct {
	msg  string
	path []string // where in the file, to find the line; nil: nowhere in particular
	line int      // from 1; 0: unknown
}

func (e *fileError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("compose file line %d: %s", e.line, e.msg)
	}
	return "compose file: " + e.msg
}

// at points e at path in the file.
func (e *fileError) at(path ...string) *fileError {
	e.path = path
	return e
}

// fileErrorf is an error at path in the compose file.
func fileErrorf(path []string, format string, args ...any) *fileError {
	return &fileError{msg: fmt.Sprintf(format, args...), path: path}
}

// placed gives err the line of its path in the compose file b.
func placed(b []byte, err error) error {
	var fe *fileError
	if errors.As(err, &fe) && fe.line == 0 && len(fe.path) > 0 {
		fe.line = lineOf(documents(b), fe.path...)
	}
	return err
}

// documents are the YAML documents of b, as compose-go reads them (later ones override).
func documents(b []byte) []*yaml.Node {
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for range 1 << 10 {
		var n yaml.Node
		if dec.Decode(&n) != nil {
			break
		}
		docs = append(docs, &n)
	}
	return docs
}

// lineOf is the line of the node at path in docs: of the key, for a mapping's entry; of the
// deepest that exists, when the path goes further than the file (a default compose-go fills
// in). A path element picks a mapping's key (also through aliases and "<<" merges) or a
// sequence's item, by its value ("SYS_ADMIN", or "A" for "A=1") or its index. 0: not found.
func lineOf(docs []*yaml.Node, path ...string) int {
	line, depth := 0, -1
	for _, doc := range docs {
		n, l, d := doc, 0, 0
		for ; d < len(path); d++ {
			key, val := child(n, path[d])
			if val == nil {
				break
			}
			n, l = val, key.Line
		}
		if d > 0 && d >= depth { // the deepest; a later document where as deep
			line, depth = l, d
		}
	}
	return line
}

// child is the entry of n named elem: its key (the item itself, in a sequence) and its value.
func child(n *yaml.Node, elem string) (key, val *yaml.Node) {
	for range 8 { // documents and aliases, bounded: an alias may point at an alias
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil, nil
			}
			n = n.Content[0]
			continue
		case yaml.AliasNode:
			if n.Alias == nil {
				return nil, nil
			}
			n = n.Alias
			continue
		case yaml.MappingNode:
			return entry(n, elem, true)
		case yaml.SequenceNode:
			return item(n, elem)
		}
		return nil, nil
	}
	return nil, nil
}

// entry finds key elem in mapping n, then in what n merges ("<<: *base") if merge.
func entry(n *yaml.Node, elem string, merge bool) (key, val *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == elem {
			return n.Content[i], n.Content[i+1]
		}
	}
	for i := 0; merge && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != "<<" {
			continue
		}
		bases := []*yaml.Node{n.Content[i+1]}
		if n.Content[i+1].Kind == yaml.SequenceNode {
			bases = n.Content[i+1].Content
		}
		for _, b := range bases {
			if b.Kind == yaml.AliasNode && b.Alias != nil {
				b = b.Alias
			}
			if b.Kind != yaml.MappingNode {
				continue
			}
			if k, v := entry(b, elem, false); v != nil {
				return k, v
			}
		}
	}
	return nil, nil
}

// item finds the item of sequence n whose value is elem (or starts "elem="), else item elem.
func item(n *yaml.Node, elem string) (key, val *yaml.Node) {
	for _, it := range n.Content {
		if it.Kind == yaml.ScalarNode && (it.Value == elem || strings.HasPrefix(it.Value, elem+"=")) {
			return it, it
		}
	}
	if i, err := strconv.Atoi(elem); err == nil && i >= 0 && i < len(n.Content) {
		return n.Content[i], n.Content[i]
	}
	return nil, nil
}

// yamlError says an error of compose-go's YAML parsing of b with the line it is on, or is
// nil when err is not one.
func yamlError(b []byte, err error) error {
	if fe := syntaxError(b, err); fe != nil {
		return fe
	}
	var le *yaml.LoadError
	if !errors.As(err, &le) {
		return nil
	}
	fe := &fileError{msg: le.Err.Error(), line: le.Line}
	// compose-go's decoding says the error of the key at fault as "line N: ..."
	if m := lineFirst.FindStringSubmatch(fe.msg); m != nil {
		fe.line, _ = strconv.Atoi(m[1])
		fe.msg = m[2]
	}
	if strings.Contains(fe.msg, "already defined") {
		fe.msg += ": keep one of them"
	}
	return fe
}

var lineFirst = regexp.MustCompile(`^line (\d+): (.*)$`)

// syntaxError is a YAML syntax error in b (go.yaml.in/yaml/v4's internal ParserError and
// ScannerError, whose fields are exported) with the line of the problem, numbered from 1,
// and where the construct it is in starts; nil if err holds none.
func syntaxError(b []byte, err error) *fileError {
	for e := err; e != nil; e = errors.Unwrap(e) {
		v := reflect.ValueOf(e)
		ptr := v.Kind() == reflect.Pointer
		v = reflect.Indirect(v)
		if v.Kind() != reflect.Struct || !strings.HasPrefix(v.Type().PkgPath(), "go.yaml.in/yaml/") {
			continue
		}
		// v4.0.0-rc.4 counts lines from 1, but from 0 in a ParserError of the parser's own
		// (not the composer's *ParserError); TestLoadRefusesAtLine holds it to that.
		base := 0
		switch v.Type().Name() {
		case "ParserError":
			if !ptr {
				base = 1
			}
		case "ScannerError":
		default:
			continue
		}
		line := func(mark string) int { return int(v.FieldByName(mark).FieldByName("Line").Int()) + base }
		fe := &fileError{msg: "not valid YAML: " + v.FieldByName("Message").String(), line: line("Mark")}
		if ctx := v.FieldByName("ContextMessage").String(); ctx != "" && line("ContextMark") != fe.line {
			ctx = strings.TrimPrefix(strings.TrimPrefix(ctx, "while parsing "), "while scanning ")
			col := v.FieldByName("ContextMark").FieldByName("Column").Int() + 1
			fe.msg += fmt.Sprintf(", in %s that starts on line %d, column %d", ctx, line("ContextMark"), col)
		}
		if last := lineCount(b); fe.line > last {
			fe.line = last
			fe.msg = strings.Replace(fe.msg, "YAML:", "YAML at the end of the file (is a bracket or a quote left open?):", 1)
		}
		return fe
	}
	return nil
}

// lineCount is the number of lines of b as YAML counts them (a break is CR LF, CR, LF, NEL,
// LS or PS), at least 1; a break at the end starts no line.
func lineCount(b []byte) int {
	n := 1
	for s := string(b); s != ""; {
		i := strings.IndexAny(s, "\r\n\u0085\u2028\u2029")
		if i < 0 {
			break
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		if strings.HasPrefix(s[i:], "\r\n") {
			size = 2
		}
		if s = s[i+size:]; s != "" {
			n++
		}
	}
	return n
}

// schemaPath is where a compose-go validation or decoding error points: "services.web.bogus
// false schema" and "'services[web].deploy.resources.limits.memory' invalid size" are at
// services, web and its key; "secrets.s additional properties 'content' not allowed" is at
// secrets.s.content.
func schemaPath(msg string) []string {
	if m := quotedPath.FindStringSubmatch(msg); m != nil {
		return strings.Split(strings.NewReplacer("[", ".", "]", "").Replace(m[1]), ".")
	}
	p, rest, ok := strings.Cut(msg, " ")
	if !ok || !strings.Contains(p, ".") {
		return nil
	}
	path := strings.Split(p, ".")
	if m := extraKey.FindStringSubmatch(rest); m != nil {
		path = append(path, m[1])
	}
	return path
}

var (
	quotedPath = regexp.MustCompile(`^'([A-Za-z0-9_.\-\[\]]+)' `)
	extraKey   = regexp.MustCompile(`^additional propert(?:y|ies) '([^']+)'`)
)
