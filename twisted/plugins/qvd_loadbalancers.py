"""The built-in QVD load balancers, found by ``qvd.loadbalancer.find_plugin``."""

from qvd.loadbalancer.plugins import DefaultLoadBalancer, RandomLoadBalancer

default = DefaultLoadBalancer()
random = RandomLoadBalancer()
