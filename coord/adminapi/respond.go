package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"meshwork.dev/coord/api"
)

// maxBody bounds every request body but a backup restore.
const maxBody = 1 << 20

// writeJSON answers with status and v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeError answers with err in the API's error shape.
func writeError(w http.ResponseWriter, err error) {
	var e *api.Error
	if !errors.As(err, &e) {
		e = &api.Error{Status: http.StatusInternalServerError, Code: api.CodeInternal, Message: err.Error()}
	}
	writeJSON(w, e.Status, map[string]*api.Error{"error": e})
}

func apiErr(status int, code, format string, args ...any) *api.Error {
	return &api.Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *api.Error {
	return apiErr(http.StatusBadRequest, api.CodeInvalid, format, args...)
}

func notFound(format string, args ...any) *api.Error {
	return apiErr(http.StatusNotFound, api.CodeNotFound, format, args...)
}

func forbidden(format string, args ...any) *api.Error {
	return apiErr(http.StatusForbidden, api.CodeForbidden, format, args...)
}

// decode reads a JSON body into v: at most maxBody bytes, no unknown fields, no key twice,
// field names in their own case, one value.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return apiErr(http.StatusUnsupportedMediaType, api.CodeInvalid, "Content-Type %q: send application/json", ct)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return apiErr(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body over %d bytes", maxBody)
	}
	if err != nil {
		return invalid("request body: %v", err)
	}
	return decodeJSON(data, v)
}

// decodeJSON is decode once the body is read.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return invalid("empty request body: send a JSON object")
		}
		return invalid("request body: %v", err)
	}
	// Not dec.More: it reports no more before a stray '}' or ']' (found by FuzzDecode).
	if rest := bytes.Trim(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 { // JSON's white space
		return invalid("request body: more than one JSON value, or something after it (%.20q)", rest)
	}
	if err := checkKeys(data, v); err != nil {
		return invalid("request body: %v", err)
	}
	return nil
}
