// Package kube is the Kubernetes lease store (weftd --kube-subnet-mgr): each
// node's lease lives in its Node object, in flannel's format, so flannel and
// weft nodes of one cluster read each other's leases.
//
// # Format (flannel's kube subnet manager, v0.28)
//
// The subnet is the Node's spec.podCIDRs (one IPv4 and/or one IPv6), or
// spec.podCIDR; a podCIDR of a family net-conf.json does not enable is
// ignored. What the node publishes is in annotations under the prefix
// (--kube-annotation-prefix, default flannel.alpha.coreos.com):
//
//	<prefix>/kube-subnet-manager  "true": the Node is a peer
//	<prefix>/backend-type         "vxlan", "host-gw", ... ("" from flannel's udp)
//	<prefix>/backend-data         the BackendData JSON as a string, "null" when none
//	<prefix>/public-ip            the IPv4 address peers send to
//	<prefix>/backend-v6-data      BackendV6Data, as backend-data
//	<prefix>/public-ipv6          the IPv6 address peers send to
//	<prefix>/public-ip-overwrite  set by an operator: published as public-ip
//	<prefix>/public-ipv6-overwrite
//	<prefix>/node-public-ip       set by an operator (or k3s): read from the
//	<prefix>/node-public-ipv6     own Node at start (PublicAddrs), never written
//
// node-public-ip and node-public-ipv6 are flannel's (flannel#1948, #1982):
// flanneld reads them once at start and lets each stand in for
// --public-ip / --public-ipv6, winning over the flag, so the node uses and
// publishes that address (public-ip-overwrite still wins for what is
// published) and, without --iface options, takes the interface holding it.
// The store only reads them (PublicAddrs: the families the network enables,
// a malformed value an error naming it); the daemon applies the precedence
// (internal/daemon, chooseExternal).
//
// Which of them a node writes follows flannel's rules exactly (see
// keys.published): a vxlan node writes {"VNI":1,"VtepMAC":"..."}, a host-gw
// node writes backend-data "null". They are written with a strategic merge
// patch of metadata.annotations through nodes/status, as flannel does, and
// only when they differ from what the Node carries. Once the daemon is up
// (MarkUp, store.Readier) the Node's condition NetworkUnavailable is set to
// False, reason FlannelIsUp, message "Flannel is running on this node".
//
// # How kube mode differs from the store contract (and the etcd store)
//
//   - The subnet is assigned, not picked: AcquireLease takes the Node's
//     podCIDRs as they are, whatever their length (flannel's behaviour;
//     SubnetLen, SubnetMin and SubnetMax do not apply), ignores
//     AcquireRequest.Previous, and never returns ErrNoFreeSubnet. Two Nodes
//     with one podCIDR (a misconfigured controller) are not prevented; the
//     watch keeps the first Node's lease and logs the second.
//   - A Node without a podCIDR yet gets an error wrapping store.ErrNotYet
//     (flannel exits 1); AcquireLease waits on a watch of the Node between
//     such errors, so the daemon comes up as soon as the controller assigns
//     one. A podCIDR outside the network is a config.ErrNetConf error.
//   - No TTL: leases carry no Expiration, so store.KeepLease never renews on
//     a timer. RenewLease re-publishes the annotations when someone changed
//     or removed them (KeepLease calls it when the own lease disappears from
//     the watch or shows another address) and reports ErrLeaseNotFound when
//     the Node is gone or has other podCIDRs.
//   - No reservations, and the public address is not the node's identity:
//     the Node's name is (NODE_NAME, or POD_NAMESPACE/POD_NAME's
//     spec.nodeName).
//   - The network configuration is the file at --net-config-path, not
//     something in the API.
//
// So of the storetest conformance suite, NetworkConfig, Renew, Watch and
// BadInput apply and run on client-go's fake API (harness_test.go: the
// harness plays the node IPAM controller and gives a node the first free
// /24 when it asks). The tests of picking subnets (AcquireNew,
// AcquirePrevious, AcquireReusesOwn, AcquireDuplicateIdentity,
// AcquireDualStack, AcquireReplacesMisfit, Exhausted, RaceDistinct,
// RaceSamePublicIP), of reservations (Reservation, WatchFromZero), of taking
// over another node's lease by its address (FlannelValues,
// FlannelValuesPerBackend), of TTLs (KeepLease*) and of compaction through
// the harness (WatchCompacted: the fake API keeps no history) do not;
// harness_test.go says why for each, and kube-specific tests cover those
// areas instead. realapi_test.go runs the store against a real
// kube-apiserver and kube-controller-manager (internal/kubeapi; skipped
// under -short) with kube-flannel.yml's RBAC: podCIDRs from the controller,
// dual-stack, the watch across a cut connection and an apiserver restart.
//
// # Design notes
//
//   - Memory: kube-flannel.yml gives flanneld 50 MiB. The store keeps no
//     cache of Nodes. A list is decoded as it arrives, one Node at a time,
//     into a Node holding only its name, annotations and podCIDRs
//     (nodelist.go; client-go would decode every Node whole, ~6 KB of status
//     and managedFields each), and turned into a lease at once; a watch
//     event's Node is stripped the same way. The listed leases are the
//     snapshot (~315 bytes per Node, TestMemoryPerNode); a watch then keeps
//     a digest, the subnets and the Node of each lease it sent
//     (store.Tracker) and a map from Node name to lease key.
//   - Start-up time: the first list reads at resourceVersion "0", from the
//     API server's watch cache, as an informer's does, and hands its leases
//     over in parts (ListLeasesStream) so that the daemon writes the first
//     peers' routes while the rest are still on the wire. ListLeases (weft
//     status, tests) reads consistently (""): the cache may lag a write.
//   - Binary size: the client is client-go's REST client over a scheme of
//     core/v1 alone (api.go), speaking protobuf. client-go's typed core/v1
//     client would link every API group (kubernetes/scheme), apply
//     configurations and OpenAPI models: weftd 61 MB instead of 37 MB.
//   - The watch is hand-written (list, then watch from the list's
//     resourceVersion with bookmarks) rather than an informer, so that it
//     holds no second copy of the Nodes and resumes exactly: after a
//     disconnect it watches from the last resourceVersion seen (so a Node
//     deleted meanwhile arrives as a Removed event); when that history
//     has expired (410) it lists again and sends the difference from what it
//     had sent (store.Tracker.Reset), so nothing is lost or sent twice.
//   - Anyone with nodes/status access can write the annotations: a Node
//     whose annotations or podCIDRs are missing or malformed is skipped and
//     logged once with its name (store.BadKeys), never trusted (flannel
//     v0.28.9 panics on a managed Node whose annotation map is nil).
//   - The API server unreachable: AcquireLease returns the error (the daemon
//     retries with backoff and /readyz says why); ListLeases and WatchLeases
//     retry with backoff themselves; the data plane is untouched meanwhile.
package kube
