//! Root test: services against the Linux kernel running kube-proxy's own nftables
//! ruleset, packet for packet.
//!
//! The ruleset is the complete listing kube-proxy's nftables proxier test asserts in
//! `TestOverallNFTablesRules` (kubernetes/kubernetes,
//! pkg/proxy/nftables/proxier_test.go at commit
//! 030880a5dc5449403c6d1f0aa146a7dc21d6c6dc: `baseRules` plus the expected rules of
//! its six services), loaded with `nft -f` into a kernel namespace set up as that
//! test's node: 192.168.0.2 on the uplink, cluster CIDR 10.0.0.0/8, service CIDR
//! 172.30.0.0/16. Its endpoints 10.180.0.1 and 10.180.0.3 are two pods on the node's
//! bridge (10.180.0.254/24, bridge netfilter on, as Kubernetes requires), on TAPs the
//! test holds. podplane replays the same frames with the same Service and
//! EndpointSlice objects. Covered: ClusterIP there and back (the reply bridged
//! between the pods), an endpoint's ICMP error about a DNATed connection, NodePort
//! from outside (masqueraded), a service without endpoints and a ClusterIP's
//! unserved port (both rejected with port unreachable), an unallocated service
//! address (dropped), hairpin, a Local-policy LoadBalancer IP without local
//! endpoints (dropped), and `loadBalancerSourceRanges` (one source dropped, one
//! let in). The services here have one endpoint each, so the kernel's `numgen
//! random` has one choice. `masquerade fully-random` picks the port at random on
//! both sides: the translated source port (and the TCP checksum) of masqueraded
//! frames is blanked before comparing, as is the IP ID of the errors the node makes.
//! Every IPv4 frame out of each port must be equal, and so must the connection
//! tables. The namespace goes even on failure.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::disallowed_methods)] // a real kernel on real time: waits are bounded
#![allow(unsafe_code)]

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use common::kernel::{
    assert_same_frames, connections, exchange, forwarded, icmp_error, ipv4_only, mac_text, nft_load, node_sysctls,
    replay, with_macs,
};
use common::{Guard, can_run, in_ns, ip, skip};
use podplane::testutil::{arp_request, tcp4_seq};
use podplane::wire::tcp::TcpFlags;
use podplane_tap::{TapDevice, TapFlags};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const BR: Ipv4Addr = Ipv4Addr::new(10, 180, 0, 254);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 180, 0, 1);
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 180, 0, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
const ALLOWED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

const ETH0_MAC: [u8; 6] = [0x02, 0x00, 192, 168, 0, 2];
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 192, 168, 0, 1];
const BR_MAC: [u8; 6] = [0x0a, 0x58, 10, 180, 0, 254];
const A_MAC: [u8; 6] = [0x0a, 0x58, 10, 180, 0, 1];
const C_MAC: [u8; 6] = [0x0a, 0x58, 10, 180, 0, 3];

const NODE_FILE: &str = "\
name: test-node
addresses: [192.168.0.2]
clusterCIDR: 10.0.0.0/8
serviceCIDR: 172.30.0.0/16
podCIDR: 10.180.0.0/24
nodePortRange: 3000-32767
bridges:
  - {name: cni0, address: 10.180.0.254/24}
ports:
  - {name: eth0, kind: pcap, role: uplink, mac: '02:00:c0:a8:00:02', address: 192.168.0.2/24}
  - {name: pod-a, kind: pcap, role: pod, ip: 10.180.0.1}
  - {name: pod-c, kind: pcap, role: pod, ip: 10.180.0.3}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
nat:
  masquerade: false
";

/// The Services and EndpointSlices of `TestOverallNFTablesRules`, as the API server
/// serves them.
const OBJECTS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec: {clusterIP: 172.30.0.41, ports: [{name: p80, port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: ns2}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 172.30.0.42
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]
  externalIPs: [192.168.99.22]
  healthCheckNodePort: 30000
status: {loadBalancer: {ingress: [{ip: 1.2.3.4}]}}
---
apiVersion: v1
kind: Service
metadata: {name: svc3, namespace: ns3}
spec: {type: NodePort, clusterIP: 172.30.0.43, ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3003}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc4, namespace: ns4}
spec: {type: NodePort, clusterIP: 172.30.0.44, externalIPs: [192.168.99.33], ports: [{name: p80, port: 80, protocol: TCP, targetPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc5, namespace: ns5}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Cluster
  clusterIP: 172.30.0.45
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3002}]
  healthCheckNodePort: 30000
  loadBalancerSourceRanges: [' 203.0.113.0/25']
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10800}}
status: {loadBalancer: {ingress: [{ip: 5.6.7.8}]}}
---
apiVersion: v1
kind: Service
metadata: {name: svc6, namespace: ns6}
spec: {type: ClusterIP, clusterIP: 172.30.0.46, ports: [{name: p80, port: 80, protocol: TCP, targetPort: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-1, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.1]}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc2-1, namespace: ns2, labels: {kubernetes.io/service-name: svc2}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.2]}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc3-1, namespace: ns3, labels: {kubernetes.io/service-name: svc3}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.3]}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc4-1, namespace: ns4, labels: {kubernetes.io/service-name: svc4}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.4]}, {addresses: [10.180.0.5], nodeName: test-node}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc5-1, namespace: ns5, labels: {kubernetes.io/service-name: svc5}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.3]}]
ports: [{name: p80, port: 80, protocol: TCP}]
";

/// kube-proxy's ruleset for those objects: `baseRules` and the expected rules of
/// `TestOverallNFTablesRules`, verbatim (commit in the module docs).
const RULESET: &str = r#"
add table ip kube-proxy { comment "rules for kube-proxy" ; }

add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }

add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }

add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check

add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports

add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services

# svc1
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }

add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }

# svc2
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80

add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }

add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }

# svc3
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }

# svc4
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80

add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }

# svc5
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80

add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }

# svc6
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"#;

/// The ruleset's lines, every one verbatim, with the objects (table, sets, maps,
/// chains) before the rules and elements that name them: the test's listing groups
/// them per service, and `nft -f` refuses a `goto` to a chain not yet added
/// (kube-proxy's own transactions add objects first too).
fn objects_first(ruleset: &str) -> String {
    let is_object = |l: &&str| ["add table", "add set", "add map", "add chain"].iter().any(|p| l.starts_with(p));
    let (objects, rest): (Vec<&str>, Vec<&str>) = ruleset.lines().partition(is_object);
    let mut out = objects.join("\n");
    out.push('\n');
    out.push_str(&rest.join("\n"));
    out.push('\n');
    out
}

/// An ARP request from a pod for the bridge's address (how the node learns it).
fn who_has_gateway(pod: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = arp_request(pod, BR);
    f[6..12].copy_from_slice(&mac);
    f[22..28].copy_from_slice(&mac);
    f
}

/// The frames, in order: (port, frame). Port 0 is the uplink, 1 pod-a, 2 pod-c.
fn traffic() -> Vec<(usize, Vec<u8>)> {
    let vip = |last: u8| Ipv4Addr::new(172, 30, 0, last);
    let from_a = |f: Vec<u8>| (1, with_macs(f, BR_MAC, A_MAC));
    let from_c_routed = |f: Vec<u8>| (2, with_macs(f, BR_MAC, C_MAC));
    let from_c_to_a = |f: Vec<u8>| (2, with_macs(f, A_MAC, C_MAC));
    let from_outside = |f: Vec<u8>| (0, with_macs(f, ETH0_MAC, ROUTER_MAC));
    let syn = |from: (Ipv4Addr, u16), to: (Ipv4Addr, u16)| tcp4_seq(from, to, TcpFlags::SYN, 1000, 0, b"");
    let mut router = arp_request(ROUTER, NODE);
    router[..6].copy_from_slice(&ETH0_MAC);
    router[6..12].copy_from_slice(&ROUTER_MAC);
    router[21] = 2;
    router[22..28].copy_from_slice(&ROUTER_MAC);
    router[32..38].copy_from_slice(&ETH0_MAC);
    // The SYN pod-c receives for the connection whose error it reports.
    let dnated = forwarded(with_macs(syn((POD_A, 41001), (POD_C, 80)), C_MAC, BR_MAC));
    vec![
        (0, router),
        (1, who_has_gateway(POD_A, A_MAC)),
        (2, who_has_gateway(POD_C, C_MAC)),
        // ClusterIP there and back; the answer is bridged from pod to pod.
        from_a(syn((POD_A, 41000), (vip(43), 80))),
        from_c_to_a(tcp4_seq((POD_C, 80), (POD_A, 41000), TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b"")),
        from_a(tcp4_seq((POD_A, 41000), (vip(43), 80), TcpFlags::ACK, 1001, 5001, b"")),
        // The endpoint's ICMP error about a DNATed connection.
        from_a(syn((POD_A, 41001), (vip(43), 80))),
        from_c_to_a(icmp_error(POD_C, POD_A, 3, 3, [0; 4], &dnated)),
        // NodePort from outside: DNAT and masquerade.
        from_outside(syn((CLIENT, 50000), (NODE, 3003))),
        // No endpoints, an unserved port: rejected; an unallocated address: dropped.
        from_a(syn((POD_A, 41002), (vip(46), 80))),
        from_a(syn((POD_A, 41003), (vip(43), 443))),
        from_a(syn((POD_A, 41004), (vip(50), 80))),
        // Hairpin: pod-c to its own service.
        from_c_routed(syn((POD_C, 42000), (vip(43), 80))),
        // Local policy, no local endpoint: dropped.
        from_outside(syn((CLIENT, 50001), (Ipv4Addr::new(1, 2, 3, 4), 80))),
        // loadBalancerSourceRanges 203.0.113.0/25: one source dropped, one let in.
        from_outside(syn((CLIENT, 50002), (Ipv4Addr::new(5, 6, 7, 8), 80))),
        from_outside(syn((ALLOWED, 50003), (Ipv4Addr::new(5, 6, 7, 8), 80))),
        // Another ClusterIP, to pod-a.
        from_c_routed(syn((POD_C, 42001), (vip(41), 80))),
    ]
}

/// 2026-12-04 00:00:00 UTC in ns, 1 ms between frames.
const T0: u64 = 1_796_342_400_000_000_000;

/// `frames` with the masqueraded source port and the TCP checksum of frames from
/// the bridge's address blanked (`fully-random` picks them on both sides).
fn unmasked(frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    frames
        .into_iter()
        .map(|mut f| {
            if f.len() >= 54 && f[23] == 6 && f[26..30] == BR.octets() {
                f[34..36].fill(0);
                f[50..52].fill(0);
            }
            f
        })
        .collect()
}

const PORTS: [&str; 3] = ["eth0", "pod-a", "pod-c"];

/// podplane's IPv4 output per port.
fn through_podplane(dir: &Path, frames: &[(usize, Vec<u8>)]) -> Vec<Vec<Vec<u8>>> {
    replay(dir, (NODE_FILE, Some(OBJECTS)), &PORTS, frames, T0).into_iter().map(|o| unmasked(ipv4_only(o))).collect()
}

/// The kernel's IPv4 output per port, the namespace set up as kube-proxy's test node.
fn through_the_kernel(g: &mut Guard, ns: &str, frames: &[(usize, Vec<u8>)]) -> (Vec<Vec<Vec<u8>>>, String) {
    g.netns(ns);
    let tag = std::process::id() % 100_000;
    let names = [format!("ppsu{tag}"), format!("ppsa{tag}"), format!("ppsc{tag}")];
    let taps: Vec<TapDevice> = names.iter().map(|n| TapDevice::open(n, TapFlags::default()).unwrap()).collect();
    ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
    in_ns(ns, &["sysctl", "-qw", "net.ipv6.conf.br0.disable_ipv6=1"]);
    ip(&["-n", ns, "link", "set", "br0", "address", &mac_text(BR_MAC), "up"]);
    ip(&["-n", ns, "addr", "add", "10.180.0.254/24", "dev", "br0"]);
    for (k, name) in names.iter().enumerate() {
        ip(&["link", "set", name, "netns", ns]);
        in_ns(ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{name}.disable_ipv6=1")]);
        if k == 0 {
            ip(&["-n", ns, "link", "set", name, "address", &mac_text(ETH0_MAC), "up"]);
            ip(&["-n", ns, "addr", "add", "192.168.0.2/24", "dev", name]);
        } else {
            ip(&["-n", ns, "link", "set", name, "master", "br0", "up"]);
            // kubelet's hairpin-veth mode (podplane's bridge default).
            in_ns(ns, &["bridge", "link", "set", "dev", name, "hairpin", "on"]);
        }
    }
    node_sysctls(ns, &[names[0].as_str(), names[1].as_str(), names[2].as_str(), "br0"]);
    ip(&["-n", ns, "route", "add", "default", "via", "192.168.0.1"]);
    for (addr, m, dev) in
        [("192.168.0.1", ROUTER_MAC, names[0].as_str()), ("10.180.0.1", A_MAC, "br0"), ("10.180.0.3", C_MAC, "br0")]
    {
        ip(&["-n", ns, "neigh", "replace", addr, "lladdr", &mac_text(m), "dev", dev, "nud", "permanent"]);
    }
    nft_load(ns, &objects_first(RULESET));
    let (out, ct) = exchange(&taps, ns, frames);
    (out.into_iter().map(|o| unmasked(ipv4_only(o))).collect(), ct)
}

/// `connections` with the masqueraded port of replies to the bridge's address blanked.
fn unmasked_connections(listing: &str) -> Vec<String> {
    let mut v: Vec<String> = connections(listing)
        .into_iter()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            // The reply tuple is the second src=/dst=/sport=/dport= group.
            let reply_dst = w.iter().filter(|t| t.starts_with("dst=")).nth(1).copied();
            if reply_dst == Some(&format!("dst={BR}")) {
                let mut seen = 0;
                w.iter()
                    .map(|t| {
                        if t.starts_with("dport=") {
                            seen += 1;
                            if seen == 2 {
                                return "dport=*".to_string();
                            }
                        }
                        (*t).to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                l
            }
        })
        .collect();
    v.sort();
    v
}

#[test]
fn services_match_kube_proxy_nftables_in_the_kernel() {
    if let Err(why) = can_run(&["ip", "nft", "tshark"]) {
        skip("services_match_kube_proxy_nftables_in_the_kernel", &why);
        return;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("podplane-svc-kernel-{}", std::process::id()));
    let mut g = Guard::new(dir.clone());
    let frames = traffic();
    let pp = through_podplane(&dir, &frames);
    let (kernel, kernel_ct) = through_the_kernel(&mut g, &format!("ppsvc{}", std::process::id()), &frames);
    assert_same_frames(&dir, &PORTS, &pp, &kernel, T0);
    // Out of the uplink: nothing; to pod-a: the SYN-ACK and the error from the
    // service, two rejects, pod-c's SYN through svc1; to pod-c: the SYN and ACK of
    // the first connection, the second SYN, the NodePort SYN, the hairpin SYN, the
    // allowed LoadBalancer SYN.
    assert_eq!((pp[0].len(), pp[1].len(), pp[2].len()), (0, 5, 6));
    let ours = std::fs::read_to_string(dir.join("podplane/conntrack.txt")).unwrap();
    assert_eq!(
        unmasked_connections(&ours),
        unmasked_connections(&kernel_ct),
        "podplane:\n{ours}\nkernel:\n{kernel_ct}"
    );
}
