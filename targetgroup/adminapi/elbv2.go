package adminapi

import "net/http"

// serveELBv2 answers ELBv2's Query API at /elbv2.
func serveELBv2(w http.ResponseWriter, r *http.Request) error {
	http.Error(w, "not implemented yet", http.StatusNotImplemented)
	return nil
}
