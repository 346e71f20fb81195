package adminapi

import "net/http"

// serveLattice answers VPC Lattice's REST API under /vpc-lattice/.
func serveLattice(w http.ResponseWriter, r *http.Request) error {
	http.Error(w, "not implemented yet", http.StatusNotImplemented)
	return nil
}
