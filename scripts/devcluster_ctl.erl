%% @doc Extra commands of scripts/devcluster.sh (load generator on every
%% node, partitions), run like erlmcp_fixture_ctl on a short-lived hidden
%% node: `erl -hidden ... -eval 'devcluster_ctl:main()' -extra CMD ARGS'.
%% devcluster.sh compiles this file into .devcluster/ebin.
%%
%%   load_start Name Rate Keyspace Node...  erlmcp_loadgen:start/1 on each node
%%   load_rate Name Rate Node...            change the rate (0 pauses)
%%   load_stats Name Node...                one line per node, then a total
%%                                          (sums; max_latency_us: the largest)
%%   load_stop Name Node...                 stop issuing; the record is kept
%%   load_errors Name Node...               the last errors (up to 100 per node)
%%                                          grouped by operation and reason
%%   load_verify Name Store Table Node...   every acknowledged write against
%%                                          the store (halts 1 on any loss)
%%   load_close Name Node...                drop the coordinators and records
%%   load_history Name Dir Node...          each node's recorded history (with
%%                                          a final read of every key in
%%                                          Mnesia) to Dir/<node>.history.etf
%%   split IslandA IslandB                  comma-separated node lists: every
%%                                          node is cut from the other island
%%   reconnect Node...                      connect every pair again
%%
%% Lines are `key=value' so scripts can read them with awk.
-module(devcluster_ctl).

-export([main/0]).

main() ->
    Code = try run(init:get_plain_arguments()) of
               ok -> 0;
               {error, Fmt, Args} -> io:format(standard_error, "devcluster: " ++ Fmt ++ "~n", Args), 1
           catch
               Class:Reason:Stack ->
                   io:format(standard_error, "~p:~p~n~p~n", [Class, Reason, Stack]), 1
           end,
    halt(Code).

run(["load_start", Name, Rate, Keyspace | Nodes]) ->
    Opts = #{name => list_to_atom(Name), rate => list_to_integer(Rate),
             keyspace => list_to_integer(Keyspace), history => true},
    Bad = lists:filtermap(
            fun(N) ->
                    case rpc:call(node_(N), erlmcp_loadgen, start, [Opts], 10000) of
                        {ok, _} -> io:format("~s load=started rate=~s keyspace=~s~n", [N, Rate, Keyspace]), false;
                        E -> {true, {N, E}}
                    end
            end, Nodes),
    case Bad of
        [] -> ok;
        _ -> {error, "load start failed: ~p", [Bad]}
    end;
run(["load_rate", Name, Rate | Nodes]) ->
    R = list_to_integer(Rate),
    Res = [{N, rpc:call(node_(N), erlmcp_loadgen, set_rate, [list_to_atom(Name), R], 10000)} || N <- Nodes],
    case [X || {_, V} = X <- Res, V =/= ok] of
        [] -> io:format("load rate ~b ops/s per node on ~b node(s)~n", [R, length(Nodes)]);
        Bad -> {error, "set_rate failed: ~p", [Bad]}
    end;
run(["load_stats", Name | Nodes]) ->
    stats(Name, stats, Nodes);
run(["load_stop", Name | Nodes]) ->
    stats(Name, stop, Nodes);
run(["load_errors", Name | Nodes]) ->
    lists:foreach(
      fun(N) ->
              case rpc:call(node_(N), erlmcp_loadgen, stats, [list_to_atom(Name)], 60000) of
                  #{errors := Errors} = R ->
                      Last = maps:get(last_errors, R, []),
                      io:format("~s errors=~b last=~b~n", [N, Errors, length(Last)]),
                      [io:format("  ~s count=~b first=~s last=~s reason=~s~n",
                                 [Op, C, rfc3339(T0), rfc3339(T1), Why])
                       || {{Op, Why}, {C, T0, T1}} <- group_errors(Last)];
                  E ->
                      io:format("~s error=~0p~n", [N, E])
              end
      end, Nodes);
run(["load_verify", Name, Store, Table | Nodes]) ->
    Spec = {list_to_atom(Store), list_to_atom(Table)},
    Keys = [checked, lost, wrong_value, resurrected, uncertain, read_errors],
    {Tot, Bad} = lists:foldl(
                   fun(N, {Acc, B}) ->
                           case rpc:call(node_(N), erlmcp_loadgen, verify, [list_to_atom(Name), Spec], 600000) of
                               R when is_map(R) ->
                                   io:format("~s~s~n", [N, kv(R, Keys)]),
                                   [io:format("  ~s ~0P~n", [N, S, 20]) || S <- maps:get(samples, R, [])],
                                   Bad = maps:get(lost, R) + maps:get(wrong_value, R)
                                       + maps:get(resurrected, R) + maps:get(read_errors, R),
                                   {add(R, Acc, Keys), B + Bad};
                               E ->
                                   io:format("~s error=~0p~n", [N, E]),
                                   {Acc, B + 1}
                           end
                   end, {#{}, 0}, Nodes),
    io:format("total~s~n", [kv(Tot, Keys)]),
    case Bad of
        0 -> ok;
        _ -> {error, "verify: ~b problem(s) (lost, wrong, resurrected or unreadable)", [Bad]}
    end;
run(["load_history", Name, Dir | Nodes]) ->
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Bad = lists:filtermap(
            fun(N) ->
                    case rpc:call(node_(N), erlmcp_loadgen, history,
                                  [list_to_atom(Name), #{final => {mnesia, erlmcp_session}}], 120000) of
                        B when is_binary(B) ->
                            F = filename:join(Dir, N ++ ".history.etf"),
                            ok = file:write_file(F, B),
                            io:format("~s history=~s bytes=~b~n", [N, F, byte_size(B)]),
                            false;
                        E -> {true, {N, E}}
                    end
            end, Nodes),
    case Bad of
        [] -> ok;
        _ -> {error, "load history failed: ~p", [Bad]}
    end;
run(["load_close", Name | Nodes]) ->
    [rpc:call(node_(N), erlmcp_loadgen, close, [list_to_atom(Name)], 10000) || N <- Nodes],
    ok;
run(["split", A, B]) ->
    split(nodes_of(A), nodes_of(B));
run(["reconnect" | Names]) ->
    Nodes = [node_(N) || N <- Names],
    Res = [{X, Y, rpc:call(X, net_kernel, connect_node, [Y], 10000)}
           || X <- Nodes, Y <- Nodes, X < Y],
    case [R || {_, _, V} = R <- Res, V =/= true] of
        [] -> io:format("reconnected ~b node(s)~n", [length(Nodes)]);
        Bad -> {error, "reconnect failed: ~p", [Bad]}
    end;
run(Args) ->
    {error, "unknown command: ~p", [Args]}.

%% max_latency_us (the longest single call to the store, us) is a maximum:
%% the total line gives the largest over the nodes.
stats(Name, Op, Nodes) ->
    Sums = [ops, rate, stores, fetches, deletes, errors, skipped, uncertain,
            read_lost, read_wrong, read_resurrected],
    Maxes = [max_latency_us],
    Keys = Sums ++ Maxes,
    {Tot, Bad} = lists:foldl(
                   fun(N, {Acc, B}) ->
                           case rpc:call(node_(N), erlmcp_loadgen, Op, [list_to_atom(Name)], 60000) of
                               R when is_map(R) ->
                                   io:format("~s~s~n", [N, kv(R, Keys)]),
                                   {max_of(R, add(R, Acc, Sums), Maxes), B};
                               E ->
                                   io:format("~s error=~0p~n", [N, E]),
                                   {Acc, B + 1}
                           end
                   end, {#{}, 0}, Nodes),
    io:format("total~s~n", [kv(Tot, Keys)]),
    case Bad of
        0 -> ok;
        _ -> {error, "load ~s: ~b node(s) failed", [Op, Bad]}
    end.

kv(M, Keys) ->
    [io_lib:format(" ~s=~s", [K, num(maps:get(K, M, 0))]) || K <- Keys].

num(V) when is_float(V) -> io_lib:format("~.1f", [V]);
num(V) -> io_lib:format("~p", [V]).

add(R, Acc, Keys) ->
    lists:foldl(fun(K, A) ->
                        case maps:get(K, R, 0) of
                            V when is_number(V) -> maps:update_with(K, fun(X) -> X + V end, V, A);
                            _ -> A
                        end
                end, Acc, Keys).

max_of(R, Acc, Keys) ->
    lists:foldl(fun(K, A) ->
                        case maps:get(K, R, 0) of
                            V when is_number(V) -> maps:update_with(K, fun(X) -> max(X, V) end, V, A);
                            _ -> A
                        end
                end, Acc, Keys).

%% Errors by {operation, reason}, each with its count and first and last time.
group_errors(Errors) ->
    G = lists:foldl(
          fun(E, Acc) ->
                  K = {maps:get(op, E, '?'),
                       lists:flatten(io_lib:format("~0P", [maps:get(reason, E, '?'), 8]))},
                  T = maps:get(at, E, 0),
                  maps:update_with(K, fun({C, A, B}) -> {C + 1, min(A, T), max(B, T)} end,
                                   {1, T, T}, Acc)
          end, #{}, Errors),
    lists:keysort(2, maps:to_list(G)).

rfc3339(Ms) ->
    calendar:system_time_to_rfc3339(Ms, [{unit, millisecond}, {offset, "Z"}]).

node_(N) -> list_to_atom(N).

nodes_of(S) -> [node_(N) || N <- string:lexemes(S, ",")].

%% Cuts every link between the islands, then waits until every node sees
%% exactly its own island (five polls in a row): with
%% prevent_overlapping_partitions, global may also cut links inside an
%% island, which are connected again here.
%% The cut is made on each node of B by one call that disconnects it from
%% every node of A (microseconds apart), and the time just before it is
%% printed as `at=' (RFC 3339, ms): `migctl cluster heal --split-at' takes it.
split(A, B) ->
    %% Connections to every node first, so that the time taken is the cut's.
    [pong = net_adm:ping(N) || N <- A ++ B],
    T0 = erlang:system_time(millisecond),
    [rpc:call(Y, lists, foreach, [fun erlang:disconnect_node/1, A], 10000) || Y <- B],
    [rpc:call(X, lists, foreach, [fun erlang:disconnect_node/1, B], 10000) || X <- A],
    io:format("split at=~s~n", [calendar:system_time_to_rfc3339(T0, [{unit, millisecond}, {offset, "Z"}])]),
    Deadline = erlang:monotonic_time(millisecond) + 20000,
    settle(A, B, 0, Deadline).

settle(_A, _B, 5, _Deadline) ->
    ok;
settle(A, B, Stable, Deadline) ->
    case erlang:monotonic_time(millisecond) > Deadline of
        true -> {error, "the partition did not settle", []};
        false ->
            Ok = lists:all(fun(X) -> island_ok(X, A, B) end, A)
                andalso lists:all(fun(X) -> island_ok(X, B, A) end, B),
            timer:sleep(100),
            case Ok of
                true ->
                    case Stable of
                        4 -> io:format("split: ~p | ~p~n", [A, B]);
                        _ -> ok
                    end,
                    settle(A, B, Stable + 1, Deadline);
                false -> settle(A, B, 0, Deadline)
            end
    end.

island_ok(X, Own, Other) ->
    case rpc:call(X, erlang, nodes, [], 5000) of
        Seen when is_list(Seen) ->
            Missing = [Y || Y <- Own, Y =/= X, not lists:member(Y, Seen)],
            Extra = [Y || Y <- Other, lists:member(Y, Seen)],
            [rpc:call(X, net_kernel, connect_node, [Y], 5000) || Y <- Missing],
            [rpc:call(X, erlang, disconnect_node, [Y], 5000) || Y <- Extra],
            Missing =:= [] andalso Extra =:= [];
        _ ->
            false
    end.
