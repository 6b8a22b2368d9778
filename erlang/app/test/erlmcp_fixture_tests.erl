%% EUnit tests for the erlmcp_fixture application: the three backends, the
%% store server, the seeder and the load generator's record and verify.
%% Run with `make -C erlang test' (fixture_test_runner calls every
%% exported *_test/0 function; EUnit's runner can call them too). Uses a temporary directory for DETS files
%% and a single-node (nonode@nohost) Mnesia disc schema.
-module(erlmcp_fixture_tests).
-include("fixture_test.hrl").

-export([ets_backend_test/0, dets_backend_test/0, mnesia_backend_test/0,
         store_server_test/0, mnesia_app_test/0, seed_shape_test/0, seed_stores_test/0,
         loadgen_test/0]).

-define(DAY, 86400000).

%%% helpers

tmpdir() ->
    Dir = filename:join("/tmp", "erlmcp_fixture_tests." ++ os:getpid() ++ "." ++
                            integer_to_list(erlang:unique_integer([positive]))),
    ok = filelib:ensure_path(Dir),
    Dir.

rmrf(Dir) -> file:del_dir_r(Dir).

session(Id, Timeout) ->
    Now = erlang:system_time(millisecond),
    #{id => Id, created_at => Now, last_accessed => Now, timeout_ms => Timeout,
      metadata => #{<<"client">> => <<"eunit">>}}.

start_mnesia(Dir) ->
    application:stop(mnesia),
    ok = application:set_env(mnesia, dir, Dir),
    ok = mnesia:create_schema([node()]),
    ok = mnesia:start().

stop_mnesia() ->
    stopped = mnesia:stop(),
    ok.

%% The shared contract of all three backends.
contract(Mod, State0) ->
    Id = <<"0123456789ABCDEF0123456789ABCDEF">>,
    Utf8 = <<"séance-42"/utf8>>,
    S = session(Id, ?DAY),
    {ok, State1} = Mod:store(Id, S, State0),
    {ok, State2} = Mod:store(Utf8, session(Utf8, infinity), State1),
    timer:sleep(2),
    {ok, Got, State3} = Mod:fetch(Id, State2),
    ?assert(maps:get(last_accessed, Got) > maps:get(last_accessed, S)),
    ?assertEqual(maps:remove(last_accessed, S), maps:remove(last_accessed, Got)),
    {error, not_found, State4} = Mod:fetch(<<"nope">>, State3),
    {ok, Ids, State5} = Mod:list(State4),
    ?assertEqual(lists:sort([Id, Utf8]), lists:sort(Ids)),
    %% expiry: old session with a timeout goes, infinity and fresh stay
    Old = (session(<<"old">>, 1000))#{last_accessed => erlang:system_time(millisecond) - 5000},
    OldInf = (session(<<"oldinf">>, infinity))#{last_accessed => 0},
    {ok, State6} = Mod:store(<<"old">>, Old, State5),
    {ok, State7} = Mod:store(<<"oldinf">>, OldInf, State6),
    {ok, 1, State8} = Mod:cleanup_expired(State7),
    {error, not_found, State9} = Mod:fetch(<<"old">>, State8),
    {ok, _, State10} = Mod:fetch(<<"oldinf">>, State9),
    {ok, State11} = Mod:delete(Id, State10),
    {error, not_found, State12} = Mod:fetch(Id, State11),
    {ok, State13} = Mod:delete(Id, State12),
    {ok, Left, _} = Mod:list(State13),
    ?assertEqual(lists:sort([Utf8, <<"oldinf">>]), lists:sort(Left)),
    Got.

%%% backends

ets_backend_test() ->
    {ok, St} = erlmcp_session_ets:init(#{table_name => t_ets}),
    ?assertEqual(ordered_set, ets:info(t_ets, type)),
    ?assertEqual(public, ets:info(t_ets, protection)),
    ?assert(ets:info(t_ets, named_table)),
    Got = contract(erlmcp_session_ets, St),
    %% the fetch was written back
    ?assertMatch([_], ets:lookup(t_ets, <<"séance-42"/utf8>>)),
    ?assertEqual(#{id => maps:get(id, Got)}, maps:with([id], Got)),
    %% init again finds the existing table
    {ok, _} = erlmcp_session_ets:init(#{table_name => t_ets}),
    ets:delete(t_ets).

dets_backend_test() ->
    Dir = tmpdir(),
    try
        {ok, St} = erlmcp_session_dets:init(#{dets_dir => Dir}),
        File = filename:join(Dir, "erlmcp_sessions.dets"),
        ?assertEqual(File, dets:info(erlmcp_sessions_dets, filename)),
        ?assertEqual(set, dets:info(erlmcp_sessions_dets, type)),
        ?assertEqual(60000, dets:info(erlmcp_sessions_dets, auto_save)),
        Got = contract(erlmcp_session_dets, St),
        ?assertEqual([], dets:lookup(erlmcp_sessions_dets, maps:get(id, Got))),
        [{_, #{timeout_ms := infinity}}] = dets:lookup(erlmcp_sessions_dets, <<"oldinf">>),
        ok = dets:close(erlmcp_sessions_dets),
        %% file_path wins over dets_dir; table_name is honoured
        F2 = filename:join(Dir, "other.dets"),
        {ok, #{table_name := t_dets}} =
            erlmcp_session_dets:init(#{table_name => t_dets, file_path => F2, dets_dir => "/nonexistent"}),
        ?assertEqual(F2, dets:info(t_dets, filename)),
        ok = dets:close(t_dets)
    after
        rmrf(Dir)
    end.

mnesia_backend_test() ->
    Dir = tmpdir(),
    start_mnesia(Dir),
    try
        %% not running -> error, not a crash (checked below after stop)
        {ok, St} = erlmcp_session_mnesia:init(#{disc_copies => true}),
        ?assertEqual([session_id, session_data, last_accessed],
                     mnesia:table_info(erlmcp_session, attributes)),
        ?assertEqual(set, mnesia:table_info(erlmcp_session, type)),
        ?assertEqual([node()], mnesia:table_info(erlmcp_session, disc_copies)),
        contract(erlmcp_session_mnesia, St),
        [{erlmcp_session, <<"oldinf">>, #{last_accessed := LA}, LA}] =
            mnesia:dirty_read(erlmcp_session, <<"oldinf">>),
        %% init again: the table exists, that is fine
        {ok, _} = erlmcp_session_mnesia:init(#{disc_copies => true}),
        %% custom table name: the record tag follows it
        {ok, St2} = erlmcp_session_mnesia:init(#{table_name => t_mn, nodes => [node()]}),
        ?assertEqual([node()], mnesia:table_info(t_mn, ram_copies)),
        {ok, _} = erlmcp_session_mnesia:store(<<"k">>, session(<<"k">>, ?DAY), St2),
        ?assertMatch([{t_mn, <<"k">>, #{id := <<"k">>}, _}], mnesia:dirty_read(t_mn, <<"k">>))
    after
        stop_mnesia(),
        rmrf(Dir)
    end,
    ?assertMatch({error, {mnesia_not_running, _, _}}, erlmcp_session_mnesia:init(#{})).

%%% store server and application

store_server_test() ->
    Dir = tmpdir(),
    try
        ok = application:load(erlmcp_fixture),
        ok = application:set_env(erlmcp_fixture, session_backend, erlmcp_session_ets),
        ok = application:set_env(erlmcp_fixture, session_cleanup_interval, 100),
        {ok, _} = application:ensure_all_started(erlmcp_fixture),
        #{id := Id} = S = erlmcp_session_store:new_session(#{<<"client">> => <<"t">>}),
        ?assertEqual(32, byte_size(Id)),
        ?assertMatch({match, _}, re:run(Id, "^[0-9A-F]{32}$")),
        ok = erlmcp_session_store:store(Id, S),
        {ok, #{metadata := #{<<"client">> := <<"t">>}}} = erlmcp_session_store:fetch(Id),
        {ok, [Id]} = erlmcp_session_store:list(),
        %% the timer cleanup removes an expired session
        Exp = (erlmcp_session_store:new_session(#{}, 10))#{last_accessed => 0},
        ok = erlmcp_session_store:store(maps:get(id, Exp), Exp),
        timer:sleep(400),
        {error, not_found} = erlmcp_session_store:fetch(maps:get(id, Exp)),
        ok = erlmcp_session_store:delete(Id),
        {error, not_found} = erlmcp_session_store:fetch(Id),
        {ok, 0} = erlmcp_session_store:cleanup_expired(),
        %% switch to DETS at run time
        ok = erlmcp_session_store:reconfigure(erlmcp_session_dets, #{dets_dir => Dir}),
        #{backend := erlmcp_session_dets} = erlmcp_session_store:info(),
        ok = erlmcp_session_store:store(<<"d1">>, session(<<"d1">>, ?DAY)),
        ?assertMatch([{<<"d1">>, _}], dets:lookup(erlmcp_sessions_dets, <<"d1">>)),
        %% the ETS table is still there, untouched
        ?assertEqual(0, ets:info(erlmcp_sessions_ets, size)),
        {error, _} = erlmcp_session_store:reconfigure(no_such_backend, #{}),
        #{backend := erlmcp_session_dets} = erlmcp_session_store:info(),
        ok = application:stop(erlmcp_fixture),
        %% the store server closed the DETS file on the way out
        ?assertEqual(undefined, dets:info(erlmcp_sessions_dets)),
        %% start again on DETS via the runbook's dets_dir: data survived
        ok = application:set_env(erlmcp_fixture, session_backend, erlmcp_session_dets),
        ok = application:set_env(erlmcp_fixture, dets_dir, Dir),
        {ok, _} = application:ensure_all_started(erlmcp_fixture),
        {ok, #{id := <<"d1">>}} = erlmcp_session_store:fetch(<<"d1">>)
    after
        application:stop(erlmcp_fixture),
        application:unload(erlmcp_fixture),
        rmrf(Dir)
    end.

%% With the mnesia backend the application starts mnesia; it makes a
%% schema only when told to (mnesia_create_schema), and the runbook's
%% mnesia_nodes key reaches the backend.
mnesia_app_test() ->
    Dir = tmpdir(),
    try
        ok = application:load(erlmcp_fixture),
        ok = application:set_env(mnesia, dir, Dir),
        ok = application:set_env(erlmcp_fixture, session_backend, erlmcp_session_mnesia),
        ok = application:set_env(erlmcp_fixture, mnesia_nodes, [node()]),
        ok = application:set_env(erlmcp_fixture, backend_opts, #{disc_copies => true}),
        %% no schema, not allowed to make one: a RAM schema cannot hold disc_copies
        ?assertMatch({error, _}, application:ensure_all_started(erlmcp_fixture)),
        ?assertNot(filelib:is_regular(filename:join(Dir, "schema.DAT"))),
        stopped = mnesia:stop(),
        ok = application:set_env(erlmcp_fixture, mnesia_create_schema, true),
        {ok, _} = application:ensure_all_started(erlmcp_fixture),
        ?assert(filelib:is_regular(filename:join(Dir, "schema.DAT"))),
        ?assertEqual([node()], mnesia:table_info(erlmcp_session, disc_copies)),
        #{opts := #{mnesia_nodes := [_]}} = erlmcp_session_store:info(),
        ok = erlmcp_session_store:store(<<"m">>, session(<<"m">>, ?DAY)),
        {ok, #{id := <<"m">>}} = erlmcp_session_store:fetch(<<"m">>)
    after
        application:stop(erlmcp_fixture),
        application:unload(erlmcp_fixture),
        catch stop_mnesia(),
        application:unset_env(mnesia, dir),
        rmrf(Dir)
    end.

%%% seeding

seed_shape_test() ->
    Now = 1700000000000,
    L = erlmcp_fixture_seed:sessions(3000, 42, Now),
    ?assertEqual(L, erlmcp_fixture_seed:sessions(3000, 42, Now)),
    ?assertNotEqual(L, erlmcp_fixture_seed:sessions(3000, 43, Now)),
    Sizes = [byte_size(term_to_binary(S)) || {_, S} <- L],
    ?assert(lists:min(Sizes) >= 400),
    ?assert(lists:max(Sizes) =< 600),
    Hex = [Id || {Id, _} <- L, re:run(Id, "^[0-9A-F]{32}$") =/= nomatch],
    Utf8 = [Id || {Id, _} <- L, length(unicode:characters_to_list(Id)) =/= byte_size(Id)],
    ?assertEqual(3000, length(Hex) + length(Utf8)),
    ?assert(length(Utf8) >= 10 andalso length(Utf8) =< 70),
    Inf = [S || {_, #{timeout_ms := infinity} = S} <- L],
    ?assert(length(Inf) >= 20 andalso length(Inf) =< 120),
    lists:foreach(
      fun({Id, #{id := Id2, metadata := M, timeout_ms := T, last_accessed := LA,
                 created_at := C}}) ->
              ?assertEqual(Id, Id2),
              ?assert(T =:= infinity orelse (T >= 1800000 andalso T =< ?DAY)),
              ?assert(LA =< Now andalso Now - LA < 60000 andalso C =< LA),
              [?assert(maps:is_key(K, M)) || K <- [<<"client">>, <<"user_agent">>,
                                                    <<"capabilities">>, <<"protocol_version">>]]
      end, L),
    ?assertEqual(3000, length(lists:usort([Id || {Id, _} <- L]))).

seed_stores_test() ->
    Dir = tmpdir(),
    try
        Opts = #{now => 1700000000000},
        {ok, 2500} = erlmcp_fixture_seed:seed(ets, Opts#{table_name => t_seed}, 2500, 1),
        ?assertEqual(2500, ets:info(t_seed, size)),
        %% a second run with the same seed rewrites the same rows
        {ok, 2500} = erlmcp_fixture_seed:seed(ets, Opts#{table_name => t_seed}, 2500, 1),
        ?assertEqual(2500, ets:info(t_seed, size)),
        Expected = lists:sort(erlmcp_fixture_seed:sessions(2500, 1, 1700000000000)),
        ?assertEqual(Expected, ets:tab2list(t_seed)),
        %% DETS, opened by the fixture itself and closed afterwards
        File = filename:join(Dir, "seed.dets"),
        {ok, 2500} = erlmcp_fixture_seed:seed(dets, Opts#{file_path => File}, 2500, 1),
        ?assertEqual(undefined, dets:info(erlmcp_sessions_dets)),
        {ok, T} = dets:open_file(seedcheck, [{file, File}]),
        ?assertEqual(Expected, lists:sort(dets:match_object(T, '_'))),
        %% DETS open on the node: the seeder writes into the open table
        {ok, _} = dets:open_file(erlmcp_sessions_dets, [{file, filename:join(Dir, "open.dets")}]),
        {ok, 100} = erlmcp_fixture_seed:seed(dets, #{}, 100, 2),
        ?assertEqual(100, dets:info(erlmcp_sessions_dets, size)),
        ok = dets:close(erlmcp_sessions_dets),
        ok = dets:close(T),
        %% Mnesia, batched transactions
        start_mnesia(Dir),
        {ok, 2500} = erlmcp_fixture_seed:seed(mnesia, Opts#{disc_copies => true}, 2500, 1),
        ?assertEqual(2500, mnesia:table_info(erlmcp_session, size)),
        [{Id1, S1} | _] = Expected,
        ?assertMatch([{erlmcp_session, Id1, S1, _}], mnesia:dirty_read(erlmcp_session, Id1))
    after
        catch stop_mnesia(),
        catch ets:delete(t_seed),
        rmrf(Dir)
    end.

%%% load generator

loadgen_test() ->
    Dir = tmpdir(),
    try
        ok = application:load(erlmcp_fixture),
        ok = application:set_env(erlmcp_fixture, session_backend, erlmcp_session_ets),
        {ok, _} = application:ensure_all_started(erlmcp_fixture),
        run_loadgen(lg_ets, {ets, erlmcp_sessions_ets}, 2000, 1500),
        tamper(lg_ets, erlmcp_sessions_ets),
        ok = erlmcp_loadgen:close(lg_ets),
        ok = erlmcp_session_store:reconfigure(erlmcp_session_dets, #{dets_dir => Dir}),
        run_loadgen(lg_dets, {dets, erlmcp_sessions_dets}, 1000, 1000),
        ok = erlmcp_loadgen:close(lg_dets),
        start_mnesia(Dir),
        ok = erlmcp_session_store:reconfigure(erlmcp_session_mnesia, #{disc_copies => true}),
        run_loadgen(lg_mnesia, {mnesia, erlmcp_session}, 1000, 1000),
        ok = erlmcp_loadgen:close(lg_mnesia)
    after
        application:stop(erlmcp_fixture),
        application:unload(erlmcp_fixture),
        catch stop_mnesia(),
        rmrf(Dir)
    end.

run_loadgen(Name, Spec, Rate, Ms) ->
    {ok, _} = erlmcp_loadgen:start(#{name => Name, rate => Rate, keyspace => 300,
                                     mix => #{store => 40, fetch => 40, delete => 20}}),
    timer:sleep(Ms),
    #{running := true} = erlmcp_loadgen:stats(Name),
    Stats = erlmcp_loadgen:stop(Name),
    ?debugFmt("~p: ~p", [Name, maps:without([last_errors], Stats)]),
    #{ops := Ops, errors := 0, read_lost := 0, read_wrong := 0,
      read_resurrected := 0, uncertain := 0, stores := St, fetches := F,
      deletes := D, running := false} = Stats,
    %% Everything due was issued; on a busy machine some may be skipped
    %% (the store fell behind), but most must be done.
    #{skipped := Skipped} = Stats,
    ?assert(Ops + Skipped >= Rate * Ms div 1000 * 7 div 10),
    ?assert(Ops >= Rate * Ms div 1000 div 4),
    ?assertEqual(Ops, St + F + D),
    Acked = erlmcp_loadgen:acked(Name),
    ?assertEqual(Acked, binary_to_term(erlmcp_loadgen:acked_binary(Name))),
    ?assert(length(Acked) > 100),
    Prefix = <<"lg-", (atom_to_binary(node()))/binary, "-", (atom_to_binary(Name))/binary, "-">>,
    [?assertMatch(<<Prefix:(byte_size(Prefix))/binary, _/binary>>, Id) || {Id, _} <- Acked],
    ?assert(lists:any(fun({_, deleted}) -> true; (_) -> false end, Acked)),
    #{checked := C, lost := 0, wrong_value := 0, resurrected := 0} = erlmcp_loadgen:verify(Name, Spec),
    ?assertEqual(length(Acked), C),
    %% stop is idempotent and the counters stay
    ?assertEqual(Ops, maps:get(ops, erlmcp_loadgen:stop(Name))).

%% Damage the store behind the loadgen's back: verify must see each kind.
tamper(Name, Tab) ->
    Acked = erlmcp_loadgen:acked(Name),
    [{Lost, _}, {Wrong, {stored, _}} | _] = [A || {_, {stored, _}} = A <- Acked],
    [{Dead, deleted} | _] = [A || {_, deleted} = A <- Acked],
    true = ets:delete(Tab, Lost),
    [{_, WS}] = ets:lookup(Tab, Wrong),
    true = ets:insert(Tab, {Wrong, WS#{metadata => #{}}}),
    true = ets:insert(Tab, {Dead, session(Dead, ?DAY)}),
    %% a different last_accessed alone is not a difference
    [{Some, {stored, _}} | _] = lists:reverse([A || {_, {stored, _}} = A <- Acked]),
    [{_, SS}] = ets:lookup(Tab, Some),
    true = ets:insert(Tab, {Some, SS#{last_accessed => 1}}),
    R = erlmcp_loadgen:verify(Name, {ets, Tab}),
    ?assertMatch(#{lost := 1, wrong_value := 1, resurrected := 1}, R),
    Kinds = lists:sort([K || #{kind := K} <- maps:get(samples, R)]),
    ?assertEqual([lost, resurrected, wrong_value], Kinds),
    ?assertMatch({error, {no_ets_table, _}}, erlmcp_loadgen:verify(Name, {ets, no_such_table})).
