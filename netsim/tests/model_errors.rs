//! Bad topologies: each case is an inline file and the diagnostics it must produce, held as
//! insta snapshots so reviewers read the exact messages users will see.

use std::path::Path;

use netsim::model;
use rstest::rstest;

/// Parses and plans `src` as `test.toml`, returning the rendered diagnostics.
fn diagnose(src: &str) -> String {
    let file = Path::new("test.toml");
    let result = model::parse(src, file).and_then(|t| model::plan(&t));
    match result {
        Ok(plan) => panic!("expected errors, got a plan:\n{}", plan.render()),
        Err(d) => {
            assert!(!d.is_empty());
            for diag in d.iter() {
                assert!(
                    !diag.help.is_empty(),
                    "every error says how to fix it: {diag}"
                );
                assert!(
                    diag.line > 0 && diag.column > 0,
                    "every error has a position: {diag}"
                );
            }
            d.to_string()
        }
    }
}

#[rstest]
#[case::syntax("[[host]\nname = \"h1\"\n")]
#[case::syntax_unquoted("[[host]]\nname = h1\n")]
#[case::unknown_key("[[switch]]\nname = \"sw1\"\nsubnt = \"198.18.1.0/24\"\n")]
#[case::unknown_key_nested(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\nroutes = [{ dst = \"default\", vai = \"198.18.1.1\" }]\n"
)]
#[case::unknown_section("[[hosts]]\nname = \"h1\"\n")]
#[case::table_instead_of_list("[host]\nname = \"h1\"\n")]
#[case::wrong_type("[[switch]]\nname = \"sw1\"\nmtu = \"big\"\n")]
#[case::missing_key("[[host]]\nswitches = [\"sw1\"]\n")]
#[case::unknown_expect_kind(
    "[[host]]\nname = \"h1\"\n[[expect]]\nkind = \"ping\"\nfrom = \"h1\"\nto = \"h1\"\n"
)]
#[case::duplicate_names(
    "[[host]]\nname = \"h1\"\ncontainers = [\"c1\"]\n\n[[host]]\nname = \"h1\"\n\n[[router]]\nname = \"c1\"\n"
)]
#[case::link_to_missing_node(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[host]]\nname = \"h3\"\n[[link]]\nendpoints = [\"h1\", \"h4\"]\nsubnet = \"198.18.1.0/30\"\n"
)]
#[case::switches_lists_missing_switch("[[host]]\nname = \"h1\"\nswitches = [\"sw9\"]\n")]
#[case::switches_lists_a_host(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\nswitches = [\"h1\"]\n"
)]
#[case::link_between_switches(
    "[[switch]]\nname = \"sw1\"\n[[switch]]\nname = \"sw2\"\n[[link]]\nendpoints = [\"sw1\", \"sw2\"]\n"
)]
#[case::link_to_itself(
    "[[host]]\nname = \"h1\"\n[[link]]\nendpoints = [\"h1\", \"h1\"]\nsubnet = \"198.18.1.0/30\"\n"
)]
#[case::link_to_container(
    "[[host]]\nname = \"h1\"\ncontainers = [\"c1\"]\n[[link]]\nendpoints = [\"h1\", \"c1\"]\nsubnet = \"198.18.1.0/30\"\n"
)]
#[case::link_with_three_ends(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[host]]\nname = \"h3\"\n[[link]]\nendpoints = [\"h1\", \"h2\", \"h3\"]\n"
)]
#[case::link_without_addresses(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\n"
)]
#[case::link_subnet_on_switch_link(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[link]]\nendpoints = [\"h1\", \"sw1\"]\nsubnet = \"198.18.2.0/24\"\n"
)]
#[case::wrong_number_of_addresses(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[link]]\nendpoints = [\"h1\", \"sw1\"]\naddresses = [\"198.18.1.5\", \"198.18.1.6\"]\n"
)]
#[case::overlapping_subnets(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.0.0/16\"\n\n[[switch]]\nname = \"sw2\"\nsubnet = \"198.18.2.0/24\"\n"
)]
#[case::overlapping_link_subnet(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.4/30\"\n"
)]
#[case::malformed_subnet("[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/33\"\n")]
#[case::subnet_without_length("[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0\"\n")]
#[case::subnet_with_host_bits("[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.5/24\"\n")]
#[case::malformed_address(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[link]]\nendpoints = [\"h1\", \"sw1\"]\naddresses = [\"198.18.1.300\"]\n"
)]
#[case::address_outside_subnet(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[link]]\nendpoints = [\"h1\", \"sw1\"]\naddresses = [\"198.18.2.10\"]\n"
)]
#[case::address_is_broadcast(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[link]]\nendpoints = [\"h1\", \"sw1\"]\naddresses = [\"198.18.1.255\"]\n"
)]
#[case::address_used_twice(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"sw1\"]\naddresses = [\"198.18.1.7\"]\n[[link]]\nendpoints = [\"h2\", \"sw1\"]\naddresses = [\"198.18.1.7\"]\n"
)]
#[case::address_without_length_or_subnet(
    "[[switch]]\nname = \"sw1\"\n[[host]]\nname = \"h1\"\n[[link]]\nendpoints = [\"h1\", \"sw1\"]\naddresses = [\"198.18.1.7\"]\n"
)]
#[case::p2p_addresses_on_different_subnets(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\naddresses = [\"198.18.1.1/30\", \"198.18.2.2/30\"]\n"
)]
#[case::auto_address_without_subnet(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\naddresses = [\"198.18.1.1/30\", \"auto\"]\n"
)]
#[case::p2p_addresses_overlap_a_switch(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\naddresses = [\"198.18.1.1/30\", \"198.18.1.3/30\"]\n"
)]
#[case::subnet_outside_benchmark_range("[[switch]]\nname = \"sw1\"\nsubnet = \"10.0.0.0/24\"\n")]
#[case::subnet_in_overlay_range("[[switch]]\nname = \"sw1\"\nsubnet = \"198.19.1.0/24\"\n")]
#[case::address_outside_benchmark_range(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\naddresses = [\"192.168.1.1/30\", \"192.168.1.2/30\"]\n"
)]
#[case::overlay_range_in_underlay("[overlay]\nrange = \"198.18.0.0/16\"\n")]
#[case::subnet_exhausted(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/30\"\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h3\"\nswitches = [\"sw1\"]\n"
)]
#[case::mtu_too_small("[[switch]]\nname = \"sw1\"\nmtu = 50\n")]
#[case::mtu_too_large(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\nmtu = 70000\n"
)]
#[case::overlay_mtu_out_of_range("[overlay]\nrange = \"198.19.0.0/16\"\nmtu = 10\n")]
#[case::overlay_mtu_word("[overlay]\nrange = \"198.19.0.0/16\"\nmtu = \"automatic\"\n")]
#[case::overlay_empty_password("[overlay]\nrange = \"198.19.0.0/16\"\npassword = \"\"\n")]
#[case::name_too_long("[[host]]\nname = \"database-primary\"\n")]
#[case::name_bad_characters("[[host]]\nname = \"Host_1\"\ncontainers = [\"web.1\"]\n")]
#[case::lab_name_bad("[lab]\nname = \"My Lab\"\n")]
#[case::gateway_not_on_a_subnet(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ngateway = \"198.18.2.1\"\n"
)]
#[case::gateway_node_shares_no_subnet(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[switch]]\nname = \"sw2\"\nsubnet = \"198.18.2.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw2\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ngateway = \"r1\"\n"
)]
#[case::gateway_missing_node(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ngateway = \"r2\"\n"
)]
#[case::route_problems(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ngateway = \"r1\"\nroutes = [\n  { dst = \"default\", via = \"r1\" },\n  { dst = \"10.1.0.0/16\", via = \"r1\" },\n  { dst = \"198.18.5.0/24\", via = \"198.18.1.2\" },\n]\n"
)]
#[case::expect_missing_nodes(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\n[[expect]]\nkind = \"reach\"\nfrom = \"h2\"\nto = \"h1\"\n[[expect]]\nkind = \"reach\"\nfrom = \"h1\"\nto = \"h3\"\n"
)]
#[case::expect_bad_targets(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[expect]]\nkind = \"reach\"\nfrom = \"sw1\"\nto = \"h1:eth7\"\n[[expect]]\nkind = \"reach\"\nfrom = \"h1\"\nto = \"c1\"\n[[expect]]\nkind = \"reach\"\nfrom = \"h1\"\nto = \"8.8.8.8\"\n"
)]
#[case::several_errors_at_once(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\nmtu = 99999\n\n[[host]]\nname = \"h1\"\nswitches = [\"sw2\"]\n\n[[link]]\nendpoints = [\"h1\", \"h4\"]\n\n[[expect]]\nkind = \"reach\"\nfrom = \"h9\"\nto = \"h1\"\n"
)]
#[case::several_shape_errors_at_once(
    "[[switch]]\nname = \"sw1\"\nmtu = \"x\"\n\n[[host]]\nnmae = \"h1\"\n\n[overlay]\nrange = \"198.19.0.0/16\"\ncolour = \"blue\"\n"
)]
#[case::shape_bad_units(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\nshape = { rate = \"100mb\", delay = \"10 sec\", loss = \"1\" }\n"
)]
#[case::shape_unknown_key(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\nshape = { rate = \"1mbit\", latency = \"10ms\" }\n"
)]
#[case::shape_unknown_key_in_direction(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\nshape = { a_to_b = { dealy = \"10ms\" } }\n"
)]
#[case::shape_impossible_combination(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\nshape = { loss = \"1%\", b_to_a = { reorder = \"25%\" } }\n"
)]
#[case::shape_loss_over_100(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\nshape = { loss = \"150%\", distribution = \"gaussian\" }\n"
)]
#[case::unknown_profile(
    "[[host]]\nname = \"h1\"\n[[host]]\nname = \"h2\"\n[[link]]\nendpoints = [\"h1\", \"h2\"]\nsubnet = \"198.18.1.0/30\"\nprofile = \"azure-d3\"\n"
)]
#[case::expect_unknown_datapath(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[expect]]\nkind = \"datapath\"\nfrom = \"h1\"\nto = \"h2\"\ndatapath = \"odpp\"\n"
)]
#[case::expect_datapath_problems(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[expect]]\nkind = \"datapath\"\nfrom = \"r1\"\ndatapath = \"fast\"\nwithin = \"soon\"\n[[expect]]\nkind = \"datapath\"\nfrom = \"c1\"\nto = \"h1\"\ndatapath = \"sleeve\"\n"
)]
#[case::expect_key_of_another_kind(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[expect]]\nkind = \"reach\"\nfrom = \"c1\"\nto = \"c2\"\nmtu = 1400\ndatapath = \"fast\"\n"
)]
#[case::expect_reach_forms(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[expect]]\nkind = \"reach\"\nfrom = \"c1\"\ngroup = [\"c1\", \"c2\"]\n[[expect]]\nkind = \"reach\"\ngroup = [\"c1\"]\nproto = \"sctp\"\n[[expect]]\nkind = \"reach\"\npairs = [[\"c1\", \"c2\", \"h1\"]]\n[[expect]]\nkind = \"reach\"\nfrom = \"c1\"\nto = \"h2\"\nover = \"overlay\"\n"
)]
#[case::expect_mtu_problems(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[expect]]\nkind = \"mtu\"\nfrom = \"c1\"\nto = \"c2\"\n[[expect]]\nkind = \"mtu\"\nfrom = \"c1\"\nto = \"c2\"\nmtu = \"1450..1400\"\nabove = \"icmp\"\n"
)]
#[case::expect_perf_problems(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[expect]]\nkind = \"perf\"\nfrom = \"c1\"\nto = \"c2\"\ntest = \"tcp_bandwidth\"\n[[expect]]\nkind = \"perf\"\nfrom = \"h1\"\nto = \"h2\"\ntest = \"tcp_bw\"\nmin = \"0.9x native\"\n[[expect]]\nkind = \"perf\"\nfrom = \"c1\"\nto = \"c2\"\ntest = \"tcp_lat\"\nmax = \"fast\"\n"
)]
#[case::step_problems(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[step]]\nname = \"block\"\nimpair = { kind = \"block\", node = \"h2\", proto = \"icmp\", port = 6784 }\n[[step]]\nname = \"block\"\nimpair = { kind = \"cut\", link = [\"h1\", \"h2\"] }\nheal = \"all\"\n[[step]]\nname = \"kill\"\nimpair = { kind = \"kill\", node = \"r1\" }\n[[step]]\nname = \"heal\"\nheal = \"everything\"\n"
)]
#[case::step_stream_until_an_earlier_step(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[step]]\nname = \"first\"\n[[step]]\nname = \"second\"\n[[step.expect]]\nkind = \"stream\"\nfrom = \"c1\"\nto = \"c2\"\nuntil = \"first\"\n"
)]
#[case::step_impair_missing_keys(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[step]]\nname = \"partition\"\nimpair = { kind = \"partition\", left = [\"h1\"] }\n[[step]]\nname = \"shape\"\nimpair = { kind = \"shape\", link = [\"h1\", \"sw1\"] }\n"
)]
#[case::packet_filter_and_echo_size_mistakes(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\n[[step]]\nname = \"no bytes\"\nimpair = { kind = \"drop_udp_over\", node = \"sw1\" }\n[[step]]\nname = \"too few bytes\"\nimpair = { kind = \"drop_udp_over\", node = \"sw1\", bytes = 20 }\n[[step]]\nname = \"no such node\"\nimpair = { kind = \"drop_frag_needed\", node = \"sw9\" }\n[[step.expect]]\nkind = \"reach\"\nfrom = \"c1\"\nto = \"c2\"\nproto = \"tcp\"\nsize = 10000\n"
)]
#[case::secrecy_problems(
    "[[switch]]\nname = \"sw1\"\nsubnet = \"198.18.1.0/24\"\n[[router]]\nname = \"r1\"\nswitches = [\"sw1\"]\n[[host]]\nname = \"h1\"\nswitches = [\"sw1\"]\ncontainers = [\"c1\"]\n[[host]]\nname = \"h2\"\nswitches = [\"sw1\"]\ncontainers = [\"c2\"]\n[overlay]\nrange = \"198.19.0.0/16\"\npassword = \"secret\"\nhost_passwords = { r1 = \"x\", h9 = \"y\" }\n[[expect]]\nkind = \"refused\"\nfrom = \"h1\"\nto = \"h2\"\n[[expect]]\nkind = \"no_plaintext\"\nfrom = \"h1\"\nto = \"c2\"\nwithin = \"5s\"\n[[expect]]\nkind = \"no_plaintext\"\nfrom = \"c1\"\nto = \"r1\"\n"
)]
fn bad_topologies(#[case] src: &str) {
    // rstest names the thread `..::case_07_wrong_type`; the snapshot keeps `wrong_type` so
    // adding a case does not renumber the others.
    let name = std::thread::current()
        .name()
        .and_then(|n| n.rsplit("::").next())
        .map(|n| n.splitn(3, '_').nth(2).unwrap_or(n).to_string())
        .unwrap_or_default();
    insta::with_settings!({ description => src, omit_expression => true }, {
        insta::assert_snapshot!(name, diagnose(src));
    });
}

#[test]
fn an_unreadable_file_is_a_diagnostic() {
    let err = model::load(Path::new("/nonexistent/netsim/lab.toml"))
        .err()
        .map(|d| d.to_string())
        .unwrap_or_default();
    insta::assert_snapshot!(err);
}

#[test]
fn diagnostics_are_an_error_type() {
    let err = model::parse("[[host]]\nname = 1\n", Path::new("x.toml")).err();
    let boxed: Option<Box<dyn std::error::Error>> = err.map(|e| Box::new(e) as _);
    assert!(boxed.is_some_and(|e| e.to_string().starts_with("x.toml:2:8: error:")));
}
