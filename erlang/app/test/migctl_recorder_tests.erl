%% Tests of migctl_recorder (the migctl_node library): what it records,
%% its coverage across a Mnesia restart, a clear_table, and its bounds.
%% Run with `make -C erlang test'. Uses a single-node (nonode@nohost)
%% Mnesia with a disc schema in a temporary directory.
-module(migctl_recorder_tests).
-include("fixture_test.hrl").

-export([records_changes_test/0, coverage_across_restart_test/0, coverage_across_recreate_test/0,
         bounds_test/0]).

-define(T, erlmcp_session).

setup() ->
    Dir = filename:join("/tmp", "migctl_recorder_tests." ++ os:getpid() ++ "." ++
                            integer_to_list(erlang:unique_integer([positive]))),
    ok = filelib:ensure_path(Dir),
    %% An earlier test may have started the fixture, and with it the
    %% library's own recorder.
    application:stop(erlmcp_fixture),
    application:stop(migctl_node),
    application:stop(mnesia),
    ok = application:set_env(mnesia, dir, Dir),
    ok = mnesia:create_schema([node()]),
    ok = mnesia:start(),
    {atomic, ok} = mnesia:create_table(?T, [{attributes, [session_id, session_data, last_accessed]},
                                            {disc_copies, [node()]}]),
    ok = mnesia:wait_for_tables([?T], 5000),
    Dir.

teardown(Dir) ->
    catch migctl_recorder:stop(),
    stopped = mnesia:stop(),
    file:del_dir_r(Dir).

wait_subscribed() -> wait_subscribed(100).
wait_subscribed(0) -> error(not_subscribed);
wait_subscribed(N) ->
    case migctl_recorder:info() of
        #{tables := [#{subscribed := true, since := S}]} -> S;
        _ -> timer:sleep(20), wait_subscribed(N - 1)
    end.

records_changes_test() ->
    Dir = setup(),
    try
        {ok, _} = migctl_recorder:start_link(#{tables => [?T]}),
        Since = wait_subscribed(),
        Before = erlang:system_time(millisecond),
        ?assert(Since =< Before),
        {atomic, ok} = mnesia:transaction(fun() -> mnesia:write({?T, <<"a">>, #{}, 1}) end),
        ok = mnesia:sync_dirty(fun() -> mnesia:write({?T, <<"b">>, #{}, 1}) end),
        ok = mnesia:dirty_write({?T, <<"c">>, #{}, 1}),
        {atomic, ok} = mnesia:transaction(fun() -> mnesia:delete({?T, <<"a">>}) end),
        %% lookup/2 first lets the recorder handle what was sent to it.
        L = lists:sort(migctl_recorder:lookup(?T, [<<"a">>, <<"b">>, <<"c">>, <<"none">>])),
        After = erlang:system_time(millisecond),
        ?assertMatch([{<<"a">>, delete, _, _, 0}, {<<"b">>, write, _, _, _}, {<<"c">>, write, _, _, _}], L),
        [?assert(Ms >= Before andalso Ms =< After andalso O =:= node()) || {_, _, Ms, O, _} <- L],
        %% lookup_us/2: the same changes, the time to the microsecond (its
        %% millisecond is lookup/2's), in the order they were made.
        Lu = lists:sort(migctl_recorder:lookup_us(?T, [<<"a">>, <<"b">>, <<"c">>, <<"none">>])),
        ?assertEqual([{K, Op, O, D} || {K, Op, _, O, D} <- L], [{K, Op, O, D} || {K, Op, _, O, D} <- Lu]),
        [?assertEqual(Ms, Us div 1000) || {{_, _, Ms, _, _}, {_, _, Us, _, _}} <- lists:zip(L, Lu)],
        [{_, _, UsB, _, _}, {_, _, UsC, _, _}] = tl(Lu),
        [{_, _, UsA, _, _}] = migctl_recorder:lookup_us(?T, [<<"a">>]),
        ?assert(UsB =< UsC andalso UsC =< UsA),
        %% A write's digest is the one migctl compares replicas with.
        [{_, _, _, _, Dc}] = migctl_recorder:lookup(?T, [<<"c">>]),
        ?assertEqual(erlang:phash2({<<"c">>, #{}, 1}, 4294967296), Dc),
        %% What changed since a time: c's write and a's deletion, not b.
        ?assertEqual([], migctl_recorder:changed_since(?T, After + 1)),
        timer:sleep(2),
        Mid = erlang:system_time(millisecond),
        ok = mnesia:dirty_write({?T, <<"d">>, #{}, 1}),
        ?assertEqual([<<"d">>], migctl_recorder:changed_since(?T, Mid)),
        ?assertEqual([<<"a">>, <<"b">>, <<"c">>, <<"d">>], lists:sort(migctl_recorder:changed_since(?T, Before))),
        %% A clear_table is the table's cleared time.
        {atomic, ok} = mnesia:clear_table(?T),
        _ = migctl_recorder:lookup(?T, []),
        #{tables := [#{cleared := C}], writes := W, deletes := D} = migctl_recorder:info(),
        ?assert(C >= After),
        ?assertEqual({4, 1}, {W, D})
    after
        teardown(Dir)
    end.

coverage_across_restart_test() ->
    Dir = setup(),
    try
        {ok, _} = migctl_recorder:start_link(#{tables => [?T]}),
        S1 = wait_subscribed(),
        stopped = mnesia:stop(),
        timer:sleep(50),
        %% No coverage while Mnesia is stopped: absence proves nothing.
        #{tables := [#{subscribed := false, since := undefined}]} = migctl_recorder:info(),
        ok = mnesia:start(),
        ok = mnesia:wait_for_tables([?T], 5000),
        migctl_recorder ! resubscribe,
        S2 = wait_subscribed(),
        ?assert(S2 > S1),
        ok = mnesia:dirty_write({?T, <<"x">>, #{}, 1}),
        ?assertMatch([{<<"x">>, write, _, _, _}], migctl_recorder:lookup(?T, [<<"x">>]))
    after
        teardown(Dir)
    end.

%% Mnesia drops a table's subscribers without a word when the local copy
%% goes (here the table itself) and does not restore them when it comes
%% back: the recorder finds out by itself (info/0 and its periodic check).
coverage_across_recreate_test() ->
    Dir = setup(),
    try
        {ok, _} = migctl_recorder:start_link(#{tables => [?T]}),
        S1 = wait_subscribed(),
        {atomic, ok} = mnesia:delete_table(?T),
        #{tables := [#{subscribed := false, since := undefined}], dropped := 1} = migctl_recorder:info(),
        {atomic, ok} = mnesia:create_table(?T, [{attributes, [session_id, session_data, last_accessed]},
                                                {disc_copies, [node()]}]),
        S2 = wait_subscribed(),
        ?assert(S2 > S1),
        ?assert(lists:member(whereis(migctl_recorder), mnesia:table_info(?T, subscribers))),
        ok = mnesia:dirty_write({?T, <<"y">>, #{}, 1}),
        ?assertMatch([{<<"y">>, write, _, _, _}], migctl_recorder:lookup(?T, [<<"y">>]))
    after
        teardown(Dir)
    end.

bounds_test() ->
    Dir = setup(),
    try
        {ok, Pid} = migctl_recorder:start_link(#{tables => [?T], window_ms => 60000, max_keys => 100}),
        _ = wait_subscribed(),
        [ok = mnesia:dirty_write({?T, integer_to_binary(I), #{}, 1}) || I <- lists:seq(1, 300)],
        _ = migctl_recorder:lookup(?T, []),
        ?assertEqual(300, maps:get(keys, migctl_recorder:info())),
        %% Over the key cap, a prune moves the horizon forward until the
        %% table fits, and coverage then starts at the horizon.
        timer:sleep(5),
        Pid ! prune,
        #{keys := K, horizon := H, pruned := P, tables := [#{since := S}]} = migctl_recorder:info(),
        ?assert(K =< 100),
        ?assertEqual(300, K + P),
        ?assertEqual(H, S)
    after
        teardown(Dir)
    end.
