package ipvs

import "github.com/moby/ipvs"

// Handle is the part of *ipvs.Handle (github.com/moby/ipvs) the backend uses; tests use a fake.
type Handle interface {
	GetServices() ([]*ipvs.Service, error)
	NewService(*ipvs.Service) error
	UpdateService(*ipvs.Service) error
	DelService(*ipvs.Service) error
	GetDestinations(*ipvs.Service) ([]*ipvs.Destination, error)
	NewDestination(*ipvs.Service, *ipvs.Destination) error
	UpdateDestination(*ipvs.Service, *ipvs.Destination) error
	DelDestination(*ipvs.Service, *ipvs.Destination) error
}

var _ Handle = (*ipvs.Handle)(nil)
